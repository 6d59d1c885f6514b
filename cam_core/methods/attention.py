r"""Transformer explanations from attention maps: attention rollout and Chefer et al.'s relevance (issue 24).

Neither weights activation maps: both follow how the class token attends to the patch tokens through
every ``nn.MultiheadAttention`` of the model (torchvision ViT), from the input up, and read the class
token's row at the patch tokens. The target layer only gives the patch grid ``(h, w)`` (a token layer,
:mod:`cam_core.model.tokens`). Their ``alpha`` is all zero: the map is not ``sum_k alpha_k A_k`` (``combine``
computes it); they have no local accuracy and no cosine to SHAP-CAM's ``alpha``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.kernels.attention_rules import attention_with_weights
from cam_core.methods.base import BaseCAM, CAMContext
from cam_core.runtime import eval_mode

__all__ = ["AttentionRollout", "CheferRelevance"]


class _AttentionMethod(BaseCAM):
    """Runs the model once with every attention's weights ``(N, heads, T, T)`` recorded (and, if asked,
    their gradients of ``F^c``), in the order the blocks run."""

    needs_gradients = False

    def coefficients(self, ctx: CAMContext) -> Tensor:  # (N, K): no map weighting
        a = ctx.activations
        return torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)

    def relevance(self, weights: list[Tensor], grads: list[Tensor] | None) -> Tensor:  # (N, T, T)
        raise NotImplementedError

    def combine(self, ctx: CAMContext, alpha: Tensor) -> Tensor:  # (N, h, w)
        weights, grads = self._attention(ctx)
        r = self.relevance(weights, grads)  # (N, T, T)
        h, w = ctx.activations.shape[-2:]
        prefix = r.shape[-1] - h * w
        if prefix < 0:
            raise ValueError(f"{self.name}: the attention has {r.shape[-1]} tokens, fewer than the {h}x{w} "
                             f"maps of {self.target_layer!r}; choose a token layer of the same model")
        row = r[:, 0] if prefix > 0 else r.mean(1)  # the class token's row (no class token: the mean row)
        return row[:, prefix:].unflatten(1, (h, w)).to(ctx.activations.dtype)  # (N, h, w)

    def _attention(self, ctx: CAMContext) -> tuple[list[Tensor], list[Tensor] | None]:
        modules = [m for m in self.model.modules() if isinstance(m, nn.MultiheadAttention)]
        if not modules:
            raise ValueError(f"{self.name} reads the attention maps of nn.MultiheadAttention blocks "
                             f"(torchvision ViT); {type(self.model).__name__} has none: use a CAM method "
                             "instead")
        weights: list[Tensor] = []

        def hook(module: nn.Module, args: tuple, kwargs: dict, _out: object) -> object:
            returned, w = attention_with_weights(module, *args, **kwargs)
            weights.append(w)
            return returned

        handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]
        try:
            with eval_mode(self.model), torch.enable_grad():
                logits = self.model(ctx.x)
                grads = None
                if self.needs_gradients:
                    score = logits.gather(1, ctx.target[:, None]).sum()
                    grads = [g.detach() for g in torch.autograd.grad(score, weights)]
        finally:
            for handle in handles:
                handle.remove()
        return [w.detach() for w in weights], grads


class AttentionRollout(_AttentionMethod):
    r"""Attention rollout (Abnar & Zuidema, ACL 2020, Sec. 3).

    Each block's attention averaged over heads, with the residual as half of it and rows renormalised,
    ``Â_l = (0.5 mean_h A_l + 0.5 I) / rowsum``, multiplied through the blocks, ``R = Â_L ... Â_1``; the
    map is the class token's row of ``R`` at the patch tokens. Class-agnostic (no gradient).
    """

    name = "Rollout"

    def relevance(self, weights: list[Tensor], grads: list[Tensor] | None) -> Tensor:
        t = weights[0].shape[-1]
        eye = torch.eye(t, dtype=weights[0].dtype, device=weights[0].device)
        r = eye.expand_as(weights[0][:, 0]).clone()  # (N, T, T)
        for a in weights:
            a_hat = 0.5 * a.mean(1) + 0.5 * eye
            r = (a_hat / a_hat.sum(-1, keepdim=True)) @ r
        return r


class CheferRelevance(_AttentionMethod):
    r"""Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021, Sec. 3.1, the rule of their
    CVPR 2021 paper with the attention map in place of its LRP relevance).

    ``R = I``; for each block from the input up, ``Ā = mean_h (∇A ⊙ A)^+`` with ``∇A = dF^c/dA`` and
    ``R ← R + Ā R``; the map is the class token's row of ``R`` at the patch tokens. Class-specific (one
    backward pass of the whole model).
    """

    name = "Chefer"
    needs_gradients = True

    def relevance(self, weights: list[Tensor], grads: list[Tensor] | None) -> Tensor:
        assert grads is not None
        t = weights[0].shape[-1]
        r = torch.eye(t, dtype=weights[0].dtype, device=weights[0].device).expand_as(weights[0][:, 0]).clone()
        for a, g in zip(weights, grads, strict=True):
            a_bar = (g * a).clamp_min(0).mean(1)  # (N, T, T)
            r = r + a_bar @ r
        return r
