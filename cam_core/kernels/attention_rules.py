r"""DeepLIFT rules through attention (issue 24), for :func:`cam_core.deeplift`.

Attention ``softmax(Q K^T / sqrt(d)) V`` with ``Q, K, V`` all depending on ``A`` has two kinds of
non-linearity beyond the elementwise ones (GELU) and LayerNorm the kernel already has:

- :func:`matmul`, ``a @ b`` with both factors depending on A (``Q K^T``, ``attention @ V``): the
  Shapley split of a bilinear map between its two factors, the matrix form of the squeeze-excitation
  product rule (:func:`cam_core.kernels.deeplift_rules.product`): ``m_a = (b + b0) / 2``,
  ``m_b = (a + a0) / 2``,
  so ``da @ (b + b0)/2 + (a + a0)/2 @ db = a b - a0 b0`` exactly. For a head bilinear in the maps
  with the zero reference, this is the exact Shapley value of each map (tests).
- :func:`softmax`, written ``exp(z - lse(z))`` with ``lse(z) = c + log(sum(exp(z - c)))``: every step is
  elementwise (Rescale on ``exp`` and ``log``) or linear, so summation-to-delta is exact. ``c`` is a
  constant per row, the same for the input and the reference (the larger of their maxima), only for
  range: the contributions do not depend on it. Unlike a product rule on ``exp(z) * (1 / sum)``, no
  two large terms cancel when the input's and the reference's logits differ in scale.

:func:`multi_head_attention` runs ``nn.MultiheadAttention`` (self- or cross-attention, batch first or
not, no masks) as linear projections, :func:`matmul` and :func:`softmax`; the traced head runs
every module of :data:`MODULE_RULES`, function of :data:`FUNCTION_RULES` and tensor method of
:data:`METHOD_RULES` through these (``cam_core.kernels.deeplift_graph``), a plain head through a forward
hook (``cam_core.kernels.rescale``).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam_core.kernels.deeplift_rules import RuleFunction, product, rescale

__all__ = ["matmul", "einsum", "softmax", "normalize", "multi_head_attention", "attention_with_weights",
           "shifted_window_attention", "MODULE_RULES", "FUNCTION_RULES", "METHOD_RULES"]


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    if t.shape[0] % 2:
        raise ValueError(f"attention rules: tensors must be tile-stacked (2N, ...), got {tuple(t.shape)}")
    return t.chunk(2)


class _MatMul(torch.autograd.Function):
    """``a @ b``; backward: each factor's change times the other factor's midpoint (:func:`matmul`)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return _bilinear_multipliers(torch.matmul, *ctx.saved_tensors, grad_output)


def _bilinear_multipliers(f, a: Tensor, b: Tensor, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """The Shapley split of a product ``f(a, b)`` bilinear in both factors: each factor's multiplier is
    taken with the other factor at the midpoint of its input and reference halves."""
    a1, a0 = _halves(a)
    b1, b0 = _halves(b)
    a_mid, b_mid = torch.cat([(a1 + a0) / 2] * 2), torch.cat([(b1 + b0) / 2] * 2)
    with torch.enable_grad():
        a_, b_ = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
        (m_a,) = torch.autograd.grad(f(a_, b_mid), a_, grad_output)
        (m_b,) = torch.autograd.grad(f(a_mid, b_), b_, grad_output)
    return m_a, m_b


def _depends(t: object) -> bool:
    return isinstance(t, Tensor) and t.requires_grad


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (``torch.matmul`` broadcasting); the Shapley split when both depend on A, else linear."""
    if _depends(a) and _depends(b):
        return _MatMul.apply(a, b)
    return torch.matmul(a, b)


class _Einsum(torch.autograd.Function):
    """``einsum(equation, a, b)``, bilinear in ``a`` and ``b``: the same split as :class:`_MatMul`."""

    @staticmethod
    def forward(ctx, equation: str, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.equation = equation
        return torch.einsum(equation, a, b)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        equation = ctx.equation
        return (None, *_bilinear_multipliers(lambda x, y: torch.einsum(equation, x, y), *ctx.saved_tensors,
                                             grad_output))


def einsum(equation: str, *operands: Tensor) -> Tensor:
    """``torch.einsum`` of two operands (MaxViT's attention): the Shapley split when both depend on A."""
    ops = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
    if len(ops) == 2 and _depends(ops[0]) and _depends(ops[1]):
        return _Einsum.apply(equation, ops[0], ops[1])
    if sum(_depends(t) for t in ops) > 1:
        raise ValueError(f"deeplift: einsum {equation!r} of {len(ops)} operands that depend on A (at most 2)")
    return torch.einsum(equation, *ops)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm`` by :func:`matmul` (the same for 3-D factors)."""
    return matmul(a, b)


class _Exp(nn.Module):
    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, z: Tensor) -> Tensor:
        return torch.exp(z - self.shift)


def _elementwise(z: Tensor, fn: Callable[[Tensor], Tensor], eps: float) -> Tensor:
    return RuleFunction.apply(z, fn(z).detach(), fn, None, rescale, eps)


def softmax(z: Tensor, dim: int = -1, _stacklevel: int = 3, dtype: torch.dtype | None = None, *,
            eps: float = 1e-10) -> Tensor:
    """``softmax(z, dim)`` as exact DeepLIFT steps (``exp(z - lse(z))``, see the module docstring)."""
    if dtype is not None:
        z = z.to(dtype)
    if not _depends(z):
        return torch.softmax(z, dim)
    z1, z0 = _halves(z)
    shift = torch.maximum(z1.amax(dim, keepdim=True), z0.amax(dim, keepdim=True)).detach()
    shift = torch.cat([shift] * 2)  # the same constant for the input and the reference
    e = _elementwise(z, _Exp(shift).forward, eps)  # exp(z - c): Rescale
    lse = _elementwise(e.sum(dim, keepdim=True), torch.log, eps) + shift  # log: Rescale
    return _elementwise(z - lse, torch.exp, eps)  # exp(z - lse(z)): Rescale


class _Rsqrt(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, v: Tensor) -> Tensor:
        return torch.rsqrt(v.clamp_min(self.eps))


def normalize(x: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Tensor | None = None, *,
              rule_eps: float = 1e-10) -> Tensor:
    """``F.normalize(x, 2, dim)`` (Swin v2's cosine attention) as exact steps, as LayerNorm's rule:
    ``v = sum(x * x)`` (Shapley product), ``r = 1 / max(sqrt(v), eps)`` (Rescale), ``x * r`` (product,
    ``r`` changing first: no large terms where the reference's norm is ~0)."""
    if p != 2 or out is not None:
        raise ValueError("deeplift: F.normalize with p=2 and no out= only")
    if not _depends(x):
        return F.normalize(x, p, dim, eps)
    v = product(x, x).sum(dim, keepdim=True)
    r = _elementwise(v, _Rsqrt(eps * eps).forward, rule_eps)
    return product(x, r, gate=True)


def _softmax_method(z: Tensor, dim: int = -1, dtype: torch.dtype | None = None) -> Tensor:
    return softmax(z, dim, dtype=dtype)


def _heads(t: Tensor, n_heads: int) -> Tensor:
    """``(N, L, E)`` -> ``(N, heads, L, E / heads)``."""
    return t.unflatten(-1, (n_heads, t.shape[-1] // n_heads)).transpose(1, 2)


def _attention(module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
               mm: Callable[[Tensor, Tensor], Tensor], sm: Callable[[Tensor, int], Tensor],
               key_padding_mask: Tensor | None = None, need_weights: bool = True,
               attn_mask: Tensor | None = None, average_attn_weights: bool = True,
               is_causal: bool = False) -> tuple[Tensor, Tensor]:
    """``nn.MultiheadAttention.forward`` in eval mode with products ``mm`` and softmax ``sm``:
    ``(output as the module's, weights (N, heads, L, S))``."""
    if (key_padding_mask is not None or attn_mask is not None or is_causal or module.bias_k is not None
            or module.add_zero_attn):
        raise ValueError("cam_core runs nn.MultiheadAttention with no masks, bias_k/bias_v or add_zero_attn; "
                         "split the model after the attention or pass a head without them")
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))  # (N, L, E)
    e = module.embed_dim
    if module.in_proj_weight is not None:
        w_q, w_k, w_v = module.in_proj_weight.split([e, e, e])
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    b_q, b_k, b_v = module.in_proj_bias.split([e, e, e]) if module.in_proj_bias is not None else (None,) * 3
    h = module.num_heads
    q = _heads(F.linear(query, w_q, b_q), h)  # (N, h, L, d)
    k = _heads(F.linear(key, w_k, b_k), h)  # (N, h, S, d)
    v = _heads(F.linear(value, w_v, b_v), h)  # (N, h, S, d)
    scores = mm(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))  # (N, h, L, S)
    weights = sm(scores, -1)
    out = mm(weights, v).transpose(1, 2).flatten(2)  # (N, L, E)
    out = F.linear(out, module.out_proj.weight, module.out_proj.bias)
    if not module.batch_first:
        out = out.transpose(0, 1)
    return out, weights


def _returned(weights: Tensor, need_weights: bool, average_attn_weights: bool) -> Tensor | None:
    if not need_weights:
        return None
    return weights.mean(1) if average_attn_weights else weights


def multi_head_attention(module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                         key_padding_mask: Tensor | None = None, need_weights: bool = True,
                         attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                         is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """``nn.MultiheadAttention.forward`` (eval mode) with the rules of this module; returns
    ``(output, weights)`` as the module does (the weights averaged over heads if asked)."""
    out, weights = _attention(module, query, key, value, matmul, softmax, key_padding_mask, need_weights,
                              attn_mask, average_attn_weights, is_causal)
    return out, _returned(weights, need_weights, average_attn_weights)


def attention_with_weights(module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                           key_padding_mask: Tensor | None = None, need_weights: bool = True,
                           attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                           is_causal: bool = False) -> tuple[tuple[Tensor, Tensor | None], Tensor]:
    """``(what the module returns, the weights (N, heads, L, S))`` with plain autograd (no rules): the
    attention maps that attention rollout and Chefer et al.'s relevance read, with their gradients."""
    out, weights = _attention(module, query, key, value, torch.matmul, torch.softmax, key_padding_mask,
                              need_weights, attn_mask, average_attn_weights, is_causal)
    return (out, _returned(weights, need_weights, average_attn_weights)), weights


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 **kwargs: Any) -> Tensor:
    """``F.scaled_dot_product_attention`` (no dropout, additive or no mask) with the rules above."""
    if dropout_p or is_causal or kwargs.get("enable_gqa"):
        raise ValueError("deeplift through scaled_dot_product_attention: no dropout, is_causal or enable_gqa")
    scores = matmul(query * (scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])),
                    key.transpose(-2, -1))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(~attn_mask, float("-inf"))
        scores = scores + attn_mask
    return matmul(softmax(scores, -1), value)


def shifted_window_attention(input: Tensor, qkv_weight: Tensor, proj_weight: Tensor,  # noqa: A002
                             relative_position_bias: Tensor, window_size: list[int], num_heads: int,
                             shift_size: list[int], attention_dropout: float = 0.0, dropout: float = 0.0,
                             qkv_bias: Tensor | None = None, proj_bias: Tensor | None = None,
                             logit_scale: Tensor | None = None, training: bool = True) -> Tensor:
    """torchvision's Swin (v1, v2) window attention, its code with :func:`matmul`, :func:`softmax` and
    :func:`normalize` (eval mode: no dropout)."""
    if training and (attention_dropout or dropout):
        raise ValueError("deeplift: Swin attention in training mode; trace the head in eval mode")
    b, h, w, c = input.shape
    pad_r = (window_size[1] - w % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - h % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_h, pad_w, _ = x.shape
    shift_size = list(shift_size)
    if window_size[0] >= pad_h:
        shift_size[0] = 0
    if window_size[1] >= pad_w:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_h // window_size[0]) * (pad_w // window_size[1])
    x = x.view(b, pad_h // window_size[0], window_size[0], pad_w // window_size[1], window_size[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * num_windows, window_size[0] * window_size[1], c)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:  # cosine attention (v2)
        attn = matmul(normalize(q, dim=-1), normalize(k, dim=-1).transpose(-2, -1))
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = matmul(q * (c // num_heads) ** -0.5, k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        mask = x.new_zeros((pad_h, pad_w))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for hs in h_slices:
            for ws in w_slices:
                mask[hs[0] : hs[1], ws[0] : ws[1]] = count
                count += 1
        mask = mask.view(pad_h // window_size[0], window_size[0], pad_w // window_size[1], window_size[1])
        mask = mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).detach()
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, num_heads, x.size(1), x.size(1))
    attn = softmax(attn, -1)
    x = matmul(attn, v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
    x = F.linear(x, proj_weight, proj_bias)
    x = x.view(b, pad_h // window_size[0], pad_w // window_size[1], window_size[0], window_size[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, pad_h, pad_w, c)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


def _swin_functions() -> dict[Callable, Callable[..., Any]]:
    from torchvision.models import swin_transformer as swin

    return {swin.shifted_window_attention: shifted_window_attention,
            swin._patch_merging_pad: swin._patch_merging_pad}  # padding and slicing: linear


#: module type -> function run in its place, ``fn(module, *args, **kwargs)``
MODULE_RULES: dict[type[nn.Module], Callable[..., Any]] = {nn.MultiheadAttention: multi_head_attention}
#: function -> the same function with the rules of this module
FUNCTION_RULES: dict[Callable, Callable[..., Any]] = {
    torch.matmul: matmul, operator.matmul: matmul, torch.bmm: bmm, F.softmax: softmax, torch.softmax: softmax,
    F.scaled_dot_product_attention: scaled_dot_product_attention, torch.einsum: einsum,
    F.normalize: normalize,
    **_swin_functions(),
}  # fmt: skip
#: tensor method -> function of the tensor and the method's arguments
METHOD_RULES: dict[str, Callable[..., Any]] = {"matmul": matmul, "bmm": bmm, "softmax": _softmax_method}
