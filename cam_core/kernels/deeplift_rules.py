r"""DeepLIFT rules (Shrikumar et al., 2017) used by the kernel :func:`cam_core.deeplift`.

A rule is a plain function ``rule(module, inputs, outputs, grad_input, grad_output, eps)``
(Captum's signature) looked up by exact module type in :data:`RULES`. ``inputs`` / ``outputs`` are
the 2N-row tile-stacked input and output ``cat([z, z0])`` / ``cat([y, y0])`` (the activations, then
the reference), ``grad_input`` the ordinary gradient, ``grad_output`` the incoming multipliers; it
returns the multipliers of the input, the same on both halves. Every rule here keeps
summation-to-delta exact (up to float rounding): ``sum(m * (z - z0)) = sum(grad_output * (y - y0))``.

- :func:`rescale`, elementwise ``y = g(z)``: ``m = dy / dz`` (ReLU, ReLU6, LeakyReLU, ELU, SELU,
  CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid, Hardtanh, Sigmoid, Tanh, Softplus, PReLU).
- :func:`maxpool`: Captum's max-pool rule.
- :func:`product`, ``y = a * b`` with both factors depending on A (squeeze-and-excitation gating
  ``x * sigmoid(g(x))``): the Shapley split of the two-player product,
  ``m_a = (b + b0) / 2``, ``m_b = (a + a0) / 2``, so that ``m_a da + m_b db = ab - a0 b0`` exactly.
- :func:`layer_norm` (LayerNorm, torchvision's LayerNorm2d): LayerNorm written as exact steps,
  ``c = z - mean(z)`` (linear), ``v = mean(c * c)`` (Shapley product rule), ``r = 1 / sqrt(v + eps)``
  (Rescale), ``c * r`` (product rule, ``r`` first), ``* weight + bias`` (linear); its multipliers
  are those steps' chained multipliers, so summation-to-delta holds for it too. Against the
  all-zero reference ``c0 = 0``, so a map's contribution is its centred change times the actual
  ``1/std``. The error left is float32 rounding: below 1e-4 relative to ``|F(A) - F(0)|`` in
  ``tests/test_deeplift_rules.py`` and on ConvNeXt in the torchvision sweep; in float64 ~1e-12.

Linear (affine in eval mode) modules are listed in :data:`LINEAR_MODULES`: multipliers pass by the
chain rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Permute

from cam_core.model.layers import returns_its_input

Rule = Callable[[Any, Tensor, Tensor, Tensor, Tensor, float], Tensor]

__all__ = ["rescale", "maxpool", "layer_norm", "product", "register_rule", "RULES", "LINEAR_MODULES", "is_linear",
           "Rule", "RuleFunction"]


def rescale(
    module: nn.Module,
    inputs: Tensor,
    outputs: Tensor,
    grad_input: Tensor,
    grad_output: Tensor,
    eps: float = 1e-10,
) -> Tensor:
    """Rescale rule for ``y = g(z)`` elementwise: multiplier ``(g(z) - g(z0)) / (z - z0)``,
    the ordinary gradient where ``|z - z0| < eps``. Same multiplier on both halves."""
    z, z0 = inputs.chunk(2)
    y, y0 = outputs.chunk(2)
    dz = torch.cat([z - z0] * 2)  # (2N, ...)
    dy = torch.cat([y - y0] * 2)
    return torch.where(dz.abs() < eps, grad_input, grad_output * dy / dz)


def maxpool(
    module: nn.Module,
    inputs: Tensor,
    outputs: Tensor,
    grad_input: Tensor,
    grad_output: Tensor,
    eps: float = 1e-10,
) -> Tensor:
    """Captum's max-pool rule (``captum.attr._core.deep_lift.maxpool``).

    With ``m = max(y, y0)``: ``m - y0`` is sent back to the arg-max of the input, ``y - m`` to
    the arg-max of the reference, both halves' shares are added and divided by ``z - z0``
    (ordinary gradient where ``|z - z0| < eps``). We spread with ``scatter_add`` where Captum
    uses ``max_unpool``: identical for non-overlapping windows (VGG's 2x2/2), and for
    overlapping windows it keeps summation-to-delta where ``max_unpool`` drops repeated indices.
    """
    pools = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
    z, z0 = inputs.chunk(2)
    y, y0 = outputs.chunk(2)
    dz = torch.cat([z - z0] * 2)  # (2N, C, *spatial_in)
    m = torch.maximum(y, y0)
    dy = torch.cat([m - y0, y - m])  # (2N, C, *spatial_out)
    _, idx = pools[inputs.dim() - 2](
        inputs, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, True
    )
    spread = torch.zeros_like(inputs).flatten(2)  # (2N, C, prod(spatial_in))
    spread.scatter_add_(2, idx.flatten(2), (grad_output * dy).flatten(2))
    first, second = spread.view_as(inputs).chunk(2)
    spread = torch.cat([first + second] * 2)
    return torch.where(dz.abs() < eps, grad_input, spread / dz)


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to an operand's ``shape``."""
    while t.dim() > len(shape):
        t = t.sum(0)
    dims = [i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1]
    return t.sum(dims, keepdim=True) if dims else t


class _Product(torch.autograd.Function):
    """``a * b``; backward: the change of the product split between its two factors (:func:`product`)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, gate: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.gate = gate
        return a * b

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        a, b = ctx.saved_tensors
        a1, a0 = a.chunk(2)
        b1, b0 = b.chunk(2)
        if ctx.gate:  # b moves first: da * b + a0 * db
            m_a, m_b = torch.cat([b1] * 2), torch.cat([a0] * 2)
        else:  # Shapley: the average of both orders
            m_a, m_b = torch.cat([(b1 + b0) / 2] * 2), torch.cat([(a1 + a0) / 2] * 2)
        return _sum_to(grad_output * m_a, a.shape), _sum_to(grad_output * m_b, b.shape), None


def product(a: Tensor, b: Tensor, gate: bool = False) -> Tensor:
    """``a * b`` (broadcasting) for two factors that both depend on A, both tile-stacked ``cat([x, x0])``.

    DeepLIFT has no rule for a product of two inputs. Both splits here are exact,
    ``m_a da + m_b db = ab - a0 b0``, so summation-to-delta is kept:

    - ``gate=False`` (squeeze-and-excitation ``x * s(x)``): the Shapley value of the two-player game,
      ``m_a = (b + b0) / 2``, ``m_b = (a + a0) / 2`` (the average of the two orders of change);
    - ``gate=True`` (LayerNorm's ``c * r``): ``b`` changes first, ``m_a = b``, ``m_b = a0``. With
      ``a0 = 0`` (LayerNorm of a constant reference) all of the change goes through ``a``, scaled by
      the actual ``b``, and no large terms cancel (the Shapley split would route ``+-r0 c / 2``, with
      ``r0 = 1/sqrt(eps)`` ~ 300, through the two factors).
    """
    if a.shape[0] != b.shape[0] or a.shape[0] % 2:
        raise ValueError(f"product: both factors must be tile-stacked (2N, ...), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return _Product.apply(a, b, gate)


class RuleFunction(torch.autograd.Function):
    """Forward: the given output unchanged. Backward: ``rule`` on ``fn``'s input and output.

    ``fn`` recomputes the output from the input (``module.forward``: no hooks); ``module`` is what
    the rule reads its settings from (a module, or an object with the same attributes)."""

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, fn: Callable[[Tensor], Tensor], module: Any, rule: Rule,  # type: ignore[override]
                eps: float) -> Tensor:
        ctx.save_for_backward(z)
        ctx.fn, ctx.module, ctx.rule, ctx.eps = fn, module, rule, eps
        return y.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        with torch.enable_grad():
            z_ = z.detach().requires_grad_(True)
            out = ctx.fn(z_.clone())  # clone: in-place modules
            (grad_input,) = torch.autograd.grad(out, z_, grad_output)
        multiplier = ctx.rule(ctx.module, z.detach(), out.detach(), grad_input, grad_output, ctx.eps)
        return multiplier, None, None, None, None, None


class _Rsqrt(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, v: Tensor) -> Tensor:
        return torch.rsqrt(v + self.eps)


def layer_norm(
    module: Any,
    inputs: Tensor,
    outputs: Tensor,
    grad_input: Tensor,
    grad_output: Tensor,
    eps: float = 1e-10,
) -> Tensor:
    """LayerNorm over the last ``len(module.normalized_shape)`` dims, as exact DeepLIFT steps (see the
    module docstring); ``module`` has ``normalized_shape``, ``weight``, ``bias`` and ``eps``."""
    dims = tuple(range(-len(module.normalized_shape), 0))
    rsqrt = _Rsqrt(module.eps)
    with torch.enable_grad():
        z = inputs.detach().requires_grad_(True)
        c = z - z.mean(dims, keepdim=True)  # (2N, ..., C)
        v = product(c, c).mean(dims, keepdim=True)
        r = RuleFunction.apply(v, rsqrt(v), rsqrt.forward, rsqrt, rescale, eps)
        y = product(c, r, gate=True)
        if module.weight is not None:
            y = y * module.weight.detach()
        if module.bias is not None:
            y = y + module.bias.detach()
        (multiplier,) = torch.autograd.grad(y, z, grad_output)
    return multiplier


#: module type -> DeepLIFT rule (exact type match)
RULES: dict[type[nn.Module], Rule] = {
    **{
        t: rescale
        for t in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                  nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus)
    },
    nn.MaxPool1d: maxpool,
    nn.MaxPool2d: maxpool,
    nn.MaxPool3d: maxpool,
    nn.LayerNorm: layer_norm,
}

#: leaf module types that are affine in eval mode: multipliers pass by the chain rule
LINEAR_MODULES: set[type[nn.Module]] = {
    nn.Linear,
    nn.modules.linear.NonDynamicallyQuantizableLinear,  # nn.MultiheadAttention's out_proj
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    Permute,  # torchvision.ops.misc.Permute (ConvNeXt blocks)
}


def is_linear(module: nn.Module) -> bool:
    """A leaf the multipliers pass by the chain rule: a type in :data:`LINEAR_MODULES`, or an
    Identity-like leaf of any class (no parameters, buffers or children, ``forward(self, x)`` is
    ``return x``: the padded convs' ``Identity`` of the EfficientNet packages)."""
    return type(module) in LINEAR_MODULES or returns_its_input(module)


def register_rule(module_type: type[nn.Module], rule: Rule) -> None:
    """Use ``rule`` for every module of exactly ``module_type`` (e.g. ``register_rule(nn.Mish, rescale)``)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ValueError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    RULES[module_type] = rule
