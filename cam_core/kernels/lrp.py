r"""Layer-wise relevance propagation through the head (LRP-epsilon; Bach et al., 2015), for LRP-CAM.

``lrp(head, A, target)`` returns the relevance ``R`` of every activation, ``(N, K, h, w)``, for the
target logit: the output relevance is ``F^c(A)`` and it is passed down layer by layer with

- the epsilon rule at every affine module (Linear, Conv, BatchNorm, average and max pools, and any
  module registered as linear for DeepLIFT in :data:`cam_core.kernels.rescale.LINEAR_MODULES`, such as the VQA
  model's question-gated ``FixedMultiply``), output ``z = W x + b``:
  ``R_x = x ⊙ W^T (R_z / (z + eps sign(z)))`` (``sign(0) = 1``);
- the identity rule at element-wise activations with ``g(0) = 0`` (ReLU, Tanh, ...): ``R_x = R_y``;
- the chain rule at shape-only modules (Flatten, Dropout in eval mode, Identity) and at functional
  additions and reshapes (a residual sum splits relevance in proportion to its terms).

These are Captum's default rules (``captum.attr.LRP``, epsilon ``1e-9``), which the official LRP-CAM
code uses. They are implemented as a modified gradient: relevance is ``value ⊙ m`` with ``m`` flowing
backwards like a gradient, scaled by ``z / (z + eps sign z)`` at affine outputs and by ``g(x) / x`` at
activations; ``R_A = A ⊙ m_A``. With ``eps -> 0`` the rules keep ``sum R`` equal to the relevance
entering each layer except what biases absorb, so for a bias-free ReLU head ``sum R = F^c(A)``
(``return_delta=True`` reports ``sum R - F^c(A)`` per image).

A module type without a rule raises ``ValueError`` (LRP has no general rule for, e.g., a Sigmoid,
whose ``g(0) != 0``). Hooks are removed and ``training`` flags restored in ``finally``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.kernels.deeplift_rules import LINEAR_MODULES
from cam_core.model.targets import as_target
from cam_core.runtime import eval_mode

__all__ = ["lrp", "EPSILON_MODULES", "IDENTITY_MODULES", "PASS_MODULES"]

#: affine modules: the epsilon rule at their output
EPSILON_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
#: element-wise activations with g(0) = 0: relevance passes unchanged
IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardtanh,
)
#: shape-only modules: the chain rule
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)


class _Stabilise(torch.autograd.Function):
    """Identity forward; backward scales by ``z / (z + eps sign z)`` (the epsilon rule's denominator)."""

    @staticmethod
    def forward(ctx, z: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        sign = torch.where(z >= 0, 1.0, -1.0).to(z)
        return grad * z / (z + ctx.eps * sign), None


class _PassRelevance(torch.autograd.Function):
    """``y = g(x)`` forward; backward multiplies by ``g(x) / x`` (0 where ``x = 0``), so ``R_x = R_y``."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, y = ctx.saved_tensors
        nz = x != 0
        return torch.where(nz, grad * y / torch.where(nz, x, torch.ones_like(x)), 0.0), None


def _is_affine(m: nn.Module) -> bool:
    """The epsilon rule's modules: the built-in affine ones and those registered as linear for DeepLIFT."""
    return isinstance(m, EPSILON_MODULES) or (type(m) in LINEAR_MODULES and not isinstance(m, PASS_MODULES))


def _check_rules(head: nn.Module) -> None:
    known = EPSILON_MODULES + IDENTITY_MODULES + PASS_MODULES
    for name, m in head.named_modules():
        if next(m.children(), None) is not None:
            continue  # containers: their leaves carry the rules
        if not (isinstance(m, known) or _is_affine(m)):
            raise ValueError(
                f"LRP has no rule for {type(m).__name__} (at {name!r} in the head). Supported: affine "
                "modules (epsilon rule), ReLU-like activations with g(0) = 0 (identity rule), Flatten/"
                "Dropout/Identity; use another method (e.g. LIFT-CAM) for this head."
            )


def lrp(
    head: nn.Module,
    activations: Tensor,
    target: int | Tensor,
    epsilon: float = 1e-9,
    return_delta: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """LRP-epsilon relevance of ``activations`` ``(N, K, h, w)`` for ``F^c`` through ``head``.

    Returns ``R`` ``(N, K, h, w)``, or ``(R, delta)`` with ``delta = sum R - F^c(A)`` per image, ``(N,)``.
    """
    if not isinstance(activations, Tensor) or activations.dim() < 2:
        raise ValueError("activations must be a tensor (N, K, h, w) with the batch first")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 (it keeps z + eps sign(z) away from 0), got {epsilon}")
    _check_rules(head)
    a = activations.detach()
    t = as_target(target, a.shape[0], a.device)
    inputs: dict[nn.Module, list[Tensor]] = {}

    def pre_hook(module: nn.Module, args: tuple) -> tuple:
        inputs.setdefault(module, []).append(args[0])  # kept: an in-place activation changes its clone only
        return (args[0].clone(), *args[1:])

    def identity_hook(module: nn.Module, _args: tuple, out: Tensor) -> Tensor:
        return _PassRelevance.apply(inputs[module].pop(), out.detach())

    def epsilon_hook(_m: nn.Module, _args: tuple, out: Tensor) -> Tensor:
        return _Stabilise.apply(out, epsilon)

    handles = []
    try:
        for m in head.modules():
            if isinstance(m, IDENTITY_MODULES):
                handles.append(m.register_forward_pre_hook(pre_hook))
                handles.append(m.register_forward_hook(identity_hook))
            elif _is_affine(m):
                handles.append(m.register_forward_hook(epsilon_hook))
        with eval_mode(head), torch.enable_grad():
            a_in = a.clone().requires_grad_(True)
            out = head(a_in.clone())
            score = out.gather(1, t[:, None])[:, 0]  # (N,) F^c(A)
            (m_a,) = torch.autograd.grad(score.sum(), a_in)
    finally:
        for h in handles:
            h.remove()
    relevance = a * m_a  # R_A = A ⊙ m_A; the output's relevance is F^c(A) (m = 1 at the target logit)
    if return_delta:
        return relevance, relevance.flatten(1).sum(1) - score.detach()
    return relevance
