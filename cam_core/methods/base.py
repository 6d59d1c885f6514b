"""The base class every CAM method derives from (Eq. 1 of Jung & Oh, 2021).

``BaseCAM`` owns everything that is not a method's own idea: resolving the layer, splitting
the model into body and head, eval mode (restored afterwards), the forward pass, gradients
on demand, choosing the target, the ReLU of Eq. 1, bilinear upsampling ``u`` and per-image
min-max normalisation ``s``. A method only implements :meth:`BaseCAM.coefficients`, which
returns ``alpha`` of shape ``(N, K)``.

Conditioned models (one context per image, e.g. a VQA model with its question bound): any
batch a method feeds to the model or the head has a size that is a multiple ``R * N`` of the
explained batch and is laid out in *tiles*: row ``b`` belongs to image ``b % N``
(``torch.cat([x] * R)``, never ``repeat_interleave``). A bound model uses context ``b % N``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam_core.model.layers import resolve_call, resolve_layer
from cam_core.model.split import Split, split_model
from cam_core.model.targets import as_target
from cam_core.model.tokens import TokenGrid, TokenSpec, as_token_grid, bind_head
from cam_core.runtime import check_grad_mode, eval_mode


@dataclass
class CAMResult:
    """What a CAM method returns for a batch of ``N`` images."""

    alpha: Tensor  # (N, K) coefficients of Eq. 1
    cam: Tensor  # (N, h, w) ReLU(sum_k alpha_k A_k), not normalised
    saliency: Tensor  # (N, H, W) s(u(L)) in [0, 1]
    target: Tensor  # (N,) classes explained
    logits: Tensor  # (N, num_classes) F(A), the model's output on x
    activations: Tensor = field(repr=False)  # (N, K, h, w) A

    def to(self, device: torch.device | str) -> CAMResult:
        return CAMResult(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


@dataclass
class CAMContext:
    """Everything a method may use to compute its coefficients for one batch."""

    x: Tensor  # (N, C, H, W) the input
    activations: Tensor  # (N, K, h, w) A, detached
    logits: Tensor  # (N, num_classes) F(A), detached
    target: Tensor  # (N,) long
    model: nn.Module
    head: nn.Module | None  # F: A -> logits (None when the model could not be split)
    _gradient_fn: Callable[[], Tensor] = field(repr=False)
    _gradients: Tensor | None = field(default=None, repr=False)

    @property
    def gradients(self) -> Tensor:
        """dF^c/dA, (N, K, h, w), computed on first use."""
        if self._gradients is None:
            self._gradients = self._gradient_fn()
        return self._gradients

    def target_scores(self, logits: Tensor) -> Tensor:
        """Pick F^c from logits of a tiled batch (R*N, C) -> (R*N,)."""
        reps = logits.shape[0] // self.target.shape[0]
        return logits.gather(1, self.target.repeat(reps)[:, None]).squeeze(1)

    def require_head(self, method: str) -> nn.Module:
        if self.head is None:
            raise ValueError(
                f"{method} evaluates the head F on changed activation maps, but this model could not be "
                "split at the target layer; pass split=(body, head) to the method."
            )
        return self.head


def normalize_per_image(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """``s``: min-max to [0, 1] per image over the last two dims; a constant map becomes 0 (no NaN).

    "Constant" is relative to the map's size: a spread below ``64`` ulps of ``max |map|`` (e.g. the
    rounding of a constant 1x1 map upsampled bilinearly) or below ``eps`` counts as none, instead of
    being stretched into a 0/1 map of rounding noise.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    rtol = 64 * torch.finfo(maps.dtype).eps if maps.is_floating_point() else 0.0
    tol = torch.maximum(lo.abs(), hi.abs()) * rtol
    varies = (span > eps) & (span > tol)
    out = torch.where(varies, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.view_as(maps)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``u``: bilinear upsampling (align_corners=False) of (N, h, w) maps to (N, H, W)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class BaseCAM:
    """Base of all CAM methods: ``res = Method(model, target_layer)(x, target=None)``.

    Args:
        model: a classifier mapping (N, C, H, W) images to (N, num_classes) logits.
        target_layer: dotted name (``"features.29"``) or the module itself; its output is ``A``.
        split: optional ``(body, head)`` with ``head(body(x)) == model(x)``; by default
            :func:`cam_core.split_model` is used. Methods that only need gradients work without
            a split (the activations are then taken with a forward hook).
        batch_size: how many perturbed inputs / activation sets are evaluated per forward pass
            by the perturbation methods (Score-CAM, Ablation-CAM, SHAP-CAM).
        tokens: how a transformer layer's token sequence ``(N, T, C)`` or channels-last output
            ``(N, H, W, C)`` is viewed as maps ``(N, C, h, w)``: None infers the grid (class / register
            tokens dropped and held fixed in the head), ``(h, w)`` or ``cc.TokenGrid(...)`` gives it,
            False takes the output as maps as it is (:mod:`cam_core.model.tokens`).
    """

    #: the name used in the book's tables (set by each subclass)
    name: str = "CAM"
    #: whether coefficients() needs the head F (True) or only gradients/activations (False)
    needs_head: bool = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module,
        *,
        split: tuple[nn.Module, nn.Module] | None = None,
        batch_size: int = 64,
        tokens: TokenSpec = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.target_layer, self.layer_module = resolve_layer(model, target_layer)
        self._call = resolve_call(model, target_layer)[2]  # which call of a shared module (node name)
        self.batch_size = int(batch_size)
        self.tokens = as_token_grid(tokens)
        if split is not None:
            self.split: Split | None = Split(*split)
        else:
            try:
                self.split = split_model(model, self.target_layer)
            except ValueError:
                if self.needs_head:
                    raise
                self.split = None

    # ---- the one thing a method says -------------------------------------------------
    def coefficients(self, ctx: CAMContext) -> Tensor:  # (N, K)
        raise NotImplementedError

    def combine(self, ctx: CAMContext, alpha: Tensor) -> Tensor:  # (N, h, w), before the ReLU
        """``sum_k alpha_k A_k`` of Eq. 1. Methods whose map is not a weighted sum of whole maps
        (pixel-wise weights: LayerCAM, HiResCAM; a projection: EigenCAM) override this, and say in
        their docstring what their ``alpha`` then is."""
        return torch.einsum("nk,nkhw->nhw", alpha, ctx.activations)

    # ---- everything else ---------------------------------------------------------------
    def __call__(self, x: Tensor, target: int | Tensor | None = None) -> CAMResult:
        check_grad_mode(type(self).__name__)
        x = self._check_input(x)
        with eval_mode(self.model):
            ctx = self._forward(x, target)
            alpha = self.coefficients(ctx).detach()  # (N, K)
        if alpha.shape != ctx.activations.shape[:2]:
            raise RuntimeError(f"{type(self).__name__}.coefficients returned {tuple(alpha.shape)}, "
                               f"expected {tuple(ctx.activations.shape[:2])}")
        cam = torch.relu(self.combine(ctx, alpha))  # (N, h, w)
        saliency = normalize_per_image(upsample(cam, tuple(x.shape[-2:])))  # (N, H, W)
        return CAMResult(alpha=alpha, cam=cam, saliency=saliency, target=ctx.target,
                         logits=ctx.logits, activations=ctx.activations)

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must be a batch of images of shape (N, C, H, W); got shape "
                             f"{tuple(x.shape)}. For one image use x[None].")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch (N = 0)")
        return x

    def _check_activations(self, a: Tensor) -> None:
        if not isinstance(a, Tensor) or a.dim() != 4:
            shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            raise ValueError(
                f"target_layer {self.target_layer!r} produces {shape}, not 4-D activation maps (N, K, h, w); "
                "choose a convolutional layer (usually the last conv block's output)."
            )

    def _token_grid(self, out: object, x: Tensor) -> TokenGrid | None:
        """The grid viewing the layer's output as maps, None when it is maps already (or not a tensor)."""
        if self.tokens is None or not isinstance(out, Tensor) or out.dim() not in (3, 4):
            return None
        grid = self.tokens.resolve(out, tuple(x.shape[-2:]), self.model, repr(self.target_layer))
        return grid if grid.is_view else None

    def maps(self, x: Tensor) -> Tensor:
        """The layer's activation maps ``A`` of ``x``, ``(N, K, h, w)`` (token layers viewed as maps)."""
        if self.split is None:
            raise ValueError("maps() needs the model's body; pass split=(body, head)")
        with torch.no_grad(), eval_mode(self.model):
            out = self.split.body(x)
        grid = self._token_grid(out, x)
        return out if grid is None else grid.to_map(out)

    def _resolve_target(self, target: int | Tensor | None, logits: Tensor) -> Tensor:
        n, num_classes = logits.shape
        if target is None:
            return logits.argmax(dim=1)
        return as_target(target, n, logits.device, num_classes)

    def _forward(self, x: Tensor, target: int | Tensor | None) -> CAMContext:
        if self.split is not None:
            body, head = self.split
            with torch.no_grad():
                a = body(x)
                grid = self._token_grid(a, x)
                if grid is not None:  # a token sequence: maps, and the head bound to the other tokens
                    a, head = grid.to_map(a), bind_head(head, grid, grid.context(a))
                self._check_activations(a)
                a = a.detach().clone()  # (N, K, h, w)
                logits = head(a.clone())
            t = self._resolve_target(target, logits)

            def grad_fn() -> Tensor:
                with torch.enable_grad():
                    a_in = a.clone().requires_grad_(True)
                    out = head(a_in.clone())  # clone: the head may start with an in-place op
                    score = out.gather(1, t[:, None]).sum()
                    (g,) = torch.autograd.grad(score, a_in)
                return g.detach()

            return CAMContext(x=x, activations=a, logits=logits.detach(), target=t, model=self.model,
                              head=head, _gradient_fn=grad_fn)
        return self._forward_with_hook(x, target)

    def _forward_with_hook(self, x: Tensor, target: int | Tensor | None) -> CAMContext:
        """Activations and gradients via a forward hook on the layer (models that cannot be split)."""
        calls: list[Tensor] = []  # one per call of the layer (a shared module runs more than once)

        def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor | None:
            if not isinstance(out, Tensor):
                calls.append(out)
                return None
            # A is a leaf of its own: it requires grad even in a frozen model (requires_grad=False
            # everywhere), and the model continues on a copy, so an in-place op after the layer
            # (DenseNet's F.relu(inplace=True)) changes neither A nor its gradient
            a = out.detach().clone().requires_grad_(True)
            calls.append(a)
            return a.clone()

        handle = self.layer_module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = self.model(x)
                a = calls[-1 if self._call is None else self._call] if calls else None
                grid = self._token_grid(a, x)
                self._check_activations(a if grid is None else grid.to_map(a))
                t = self._resolve_target(target, logits.detach())
                (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
        finally:
            handle.remove()
        grads = g.detach()
        if grid is not None:  # dF/dA of the patch tokens, the other tokens held fixed
            a, grads = grid.to_map(a), grid.to_map(grads)
        return CAMContext(x=x, activations=a.detach(), logits=logits.detach(), target=t, model=self.model,
                          head=None, _gradient_fn=lambda: grads)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.target_layer!r})"
