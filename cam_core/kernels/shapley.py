r"""Shapley values of activation maps (Jung & Oh, 2021, Eq. 6 and Algorithm 1).

The game: players are the ``K`` maps of ``A``; ``v(S) = F^c(h_A(S))`` where ``h_A(S)`` sets every
map outside ``S`` to 0. Only the head ``F`` is evaluated (never the body). Three estimators:

- :func:`exact`: enumeration of all ``2^K`` coalitions (``K <= 12``), the oracle for tests;
- :func:`permutation`: Algorithm 1 (SHAP-CAM_P), marginal contributions averaged over ``P``
  random orderings, many orderings per forward pass, deterministic for a seed;
- :func:`linear_closed_form`: for an affine head, ``phi_k = F^c(only map k) - F^c(0)``.

All return ``phi`` of shape ``(N, K)`` in the activations' dtype and device; batches are laid
out in tiles (row ``b`` is image ``b % N``), so conditioned heads work unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.fx
from torch import Tensor, nn

from cam_core.model.graph_split import as_chain
from cam_core.model.layers import sequential_leaves
from cam_core.model.targets import as_target
from cam_core.runtime import eval_mode

__all__ = ["exact", "permutation", "linear_closed_form", "orderings", "MAX_EXACT_MAPS"]

#: largest K for which :func:`exact` enumerates the 2^K coalitions
MAX_EXACT_MAPS = 12


def _check(activations: Tensor, target: int | Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(activations, Tensor) or activations.dim() != 4:
        shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
        raise ValueError(f"activations must be (N, K, h, w), got {shape}")
    return activations.detach(), as_target(target, activations.shape[0], activations.device)


@torch.no_grad()
def _values(head: nn.Module, a: Tensor, target: Tensor, masks: Tensor, batch_size: int) -> Tensor:
    """``v(S)`` for each row of ``masks`` (M, K) of 0/1: returns (M, N)."""
    n = a.shape[0]
    per = max(1, batch_size // n)  # coalitions per forward pass
    out = [a.new_empty(0, n)]
    for start in range(0, masks.shape[0], per):
        m = masks[start : start + per].to(a)  # (R, K)
        x = (a[None] * m[:, None, :, None, None]).flatten(0, 1)  # (R*N, K, h, w), tile layout
        logits = head(x)  # (R*N, classes)
        out.append(logits.gather(1, target.repeat(m.shape[0])[:, None]).view(m.shape[0], n))
    return torch.cat(out)  # (M, N)


def exact(head: nn.Module, activations: Tensor, target: int | Tensor, batch_size: int = 256) -> Tensor:
    r"""Exact Shapley values (Eq. 6) by enumerating all ``2^K`` coalitions; ``K <= 12``.

    ``phi_k = sum_{S not containing k} |S|! (K-|S|-1)! / K! * (v(S + k) - v(S))``, accumulated in float64.
    """
    a, t = _check(activations, target)
    k = a.shape[1]
    if k > MAX_EXACT_MAPS:
        raise ValueError(
            f"exact() enumerates 2^K coalitions; K = {k} > {MAX_EXACT_MAPS} is too many. "
            "Use cam_core.kernels.shapley.permutation (sampling) or linear_closed_form (affine heads)."
        )
    codes = torch.arange(2**k, device=a.device)
    bits = (codes[:, None] >> torch.arange(k, device=a.device)) & 1  # (2^K, K)
    with eval_mode(head):
        v = _values(head, a, t, bits, batch_size).double()  # (2^K, N)
    size = bits.sum(1)  # (2^K,)
    weight = torch.tensor(
        [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)],
        dtype=torch.float64,
        device=a.device,
    )
    phi = torch.empty(a.shape[0], k, dtype=torch.float64, device=a.device)
    for j in range(k):
        without = codes[bits[:, j] == 0]  # (2^(K-1),)
        gain = v[without | (1 << j)] - v[without]  # (2^(K-1), N)
        phi[:, j] = (weight[size[without]][:, None] * gain).sum(0)
    return phi.to(a.dtype)


def linear_closed_form(
    head: nn.Module, activations: Tensor, target: int | Tensor, batch_size: int = 256
) -> Tensor:
    r"""Shapley values for an affine head: ``phi_k = F^c(A with only map k) - F^c(0)``.

    Exact only when ``F`` is affine in ``A`` (e.g. GAP + Linear, the ResNet head); for a
    non-linear head this is just the "single map" score, not a Shapley value.
    """
    a, t = _check(activations, target)
    k = a.shape[1]
    masks = torch.cat([torch.zeros(1, k, device=a.device), torch.eye(k, device=a.device)])  # (1+K, K)
    with eval_mode(head):
        v = _values(head, a, t, masks, batch_size).double()  # (1+K, N)
    return (v[1:] - v[:1]).t().to(a.dtype)  # (N, K)


def orderings(n_orderings: int, k: int, seed: int) -> Tensor:
    """``P`` random orderings of ``K`` maps, ``(P, K)`` long on the CPU; the same for a seed on any device."""
    gen = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(n_orderings, k, generator=gen, dtype=torch.float64)
    return torch.argsort(keys, dim=1, stable=True)


#: modules that act on each channel separately and map an all-zero channel to zero, so they
#: commute with zeroing maps (``P(A with map k zeroed) = P(A) with channel k zeroed``)
_CHANNELWISE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
)


def _chain(head: nn.Module) -> list[nn.Module] | None:
    """The modules ``head`` runs in a row: a (nested) Sequential's leaves, a traced head's chain."""
    if isinstance(head, torch.fx.GraphModule):
        return as_chain(head)
    return sequential_leaves(head)


def _is_pointwise_conv(m: nn.Module, k: int) -> bool:
    """A 1x1 convolution over the K maps (stride 1, no padding, one group): per pixel, a Linear."""
    return (type(m) is nn.Conv2d and m.in_channels == k and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.padding in ((0, 0), "valid") and m.dilation == (1, 1) and m.groups == 1)


def _fast_split(head: nn.Module, k: int) -> tuple[nn.Module, nn.Module, list[nn.Module]] | None:
    """``(stem, first_layer, rest)`` if ``head`` = channel-wise ops -> Flatten -> Linear -> rest, or
    channel-wise ops -> 1x1 Conv2d -> rest (a traced head counts when it runs as a chain)."""
    chain = _chain(head)
    if chain is None:
        return None
    i = 0
    while i < len(chain) and type(chain[i]) in _CHANNELWISE:
        i += 1
    if i < len(chain) and _is_pointwise_conv(chain[i], k):
        return nn.Sequential(*chain[:i]), chain[i], chain[i + 1 :]
    if i + 1 >= len(chain):
        return None
    flat = chain[i]
    if not (type(flat) is nn.Flatten and flat.start_dim == 1 and flat.end_dim == -1):
        return None
    j = i + 1
    while j < len(chain) and type(chain[j]) in (nn.Dropout, nn.Identity):  # identities in eval mode
        j += 1
    if j >= len(chain):
        return None
    lin = chain[j]
    if type(lin) is not nn.Linear or lin.in_features % k != 0:
        return None
    return nn.Sequential(*chain[:i]), lin, chain[j + 1 :]



class FirstLinearTerms(NamedTuple):
    """Per-map terms of the head's first Linear layer: for a coalition S of maps, that layer's
    pre-activation is ``bias + sum_{k in S} terms[:, k]``, and ``rest`` maps it to the logits."""

    terms: Tensor  # (N, K, O); O = 1 (the target row only) for an affine head
    bias: Tensor  # (O,), or (N, 1) for an affine head
    rest: list[nn.Module]  # the layers after the first Linear ([] for an affine head)


def first_linear_terms(head: nn.Module, a: Tensor, t: Tensor) -> FirstLinearTerms | None:
    """The shortcut SHAP-CAM and Ablation-CAM share when ``F`` = channel-wise ops -> Flatten -> Linear
    -> rest (torchvision VGG / ResNet heads): zeroing map k removes exactly its block of the first
    layer's input, so coalitions are sums of K per-map terms. None when the head has another form."""
    n, k = a.shape[:2]
    parts = _fast_split(head, k)
    if parts is None:
        return None
    stem, lin, rest = parts
    if isinstance(lin, nn.Conv2d):
        return _pointwise_conv_terms(stem(a.clone()), lin, list(rest))
    pooled = stem(a.clone()).flatten(2)  # (N, K, p); clone: the stem may start with an in-place ReLU
    w = lin.weight.view(lin.out_features, k, -1)  # (O, K, p): channel-major flatten, map k owns p columns
    if not rest:  # affine head: only the target row matters
        terms = torch.einsum("nkp,nkp->nk", pooled, w[t])[..., None]  # (N, K, 1)
        bias = lin.bias[t][:, None] if lin.bias is not None else torch.zeros(n, 1).to(a)  # (N, 1)
        return FirstLinearTerms(terms, bias, [])
    terms = torch.einsum("nkp,okp->nko", pooled, w)  # (N, K, O)
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features).to(a)  # (O,)
    return FirstLinearTerms(terms, bias, list(rest))


def _pointwise_conv_terms(maps: Tensor, conv: nn.Conv2d, rest: list[nn.Module]) -> FirstLinearTerms:
    """First-layer terms of a head that starts with a 1x1 conv: map k adds ``W[:, k] A_k`` to every
    output pixel, so ``terms[n, k] = W[:, k] (x) A_k`` flattened to ``O * h * w`` columns (channel
    major); a BatchNorm right after it (eval mode: affine per channel) is folded into terms and bias;
    ``rest`` starts by unflattening to ``(O, h, w)``."""
    n, k, h, w = maps.shape
    o = conv.out_channels
    weight = conv.weight[:, :, 0, 0]  # (O, K)
    bias = conv.bias if conv.bias is not None else torch.zeros(o).to(maps)
    if rest and type(rest[0]) is nn.BatchNorm2d and not rest[0].training and rest[0].track_running_stats:
        bn = rest.pop(0)
        scale = (bn.running_var + bn.eps).rsqrt() * (bn.weight if bn.weight is not None else 1.0)  # (O,)
        shift = (bn.bias if bn.bias is not None else 0.0) - bn.running_mean * scale
        weight, bias = weight * scale[:, None], bias * scale + shift
    terms = torch.einsum("nkp,ok->nkop", maps.flatten(2), weight).flatten(2)  # (N, K, O*h*w)
    return FirstLinearTerms(terms, bias.repeat_interleave(h * w), [nn.Unflatten(1, (o, h, w)), *rest])


def _generic_values(head: nn.Module, a: Tensor, t: Tensor, perm: Tensor, batch_size: int) -> Tensor:
    """``v`` of the prefixes of sizes 1 .. K-1 along each ordering: (B, K-1, N)."""
    b, k = perm.shape
    rank = torch.empty_like(perm)
    rank.scatter_(1, perm, torch.arange(k, device=perm.device).expand(b, k))  # rank[b, map] = position
    sizes = torch.arange(1, k, device=perm.device)
    masks = rank[:, None, :] < sizes[None, :, None]  # (B, K-1, K)
    return _values(head, a, t, masks.flatten(0, 1), batch_size).view(b, k - 1, -1)


class _FastGame:
    """Prefix values via running sums of per-map first-layer terms (see :func:`permutation`)."""

    def __init__(self, split: FirstLinearTerms, t: Tensor):
        n = t.shape[0]
        self.terms = split.terms.transpose(0, 1)  # (K, N, O)
        self.bias = split.bias
        rest = split.rest
        last = rest[-1] if rest else None
        if last is None:  # affine head: terms already hold the target row only
            self.rest, self.w_out, self.b_out = None, None, None
        elif type(last) is nn.Linear:  # keep only the target row of the last layer
            self.rest = nn.Sequential(*rest[:-1])
            self.w_out = last.weight[t]  # (N, O2)
            self.b_out = last.bias[t] if last.bias is not None else torch.zeros(n).to(self.terms)
        else:
            self.rest, self.w_out, self.b_out = nn.Sequential(*rest), None, None
        self.t = t
        self.clamp, self.w_pixels = _clamp_pool_linear(rest, self.w_out)
        self._buffer: Tensor | None = None

    def _prefix_sums(self, perm: Tensor) -> Tensor:
        """First-layer pre-activations of the prefixes of each ordering, ``(B*(K-1), N, O)``. Wide layers
        (a 1x1 conv's O*h*w columns) are summed map by map into a buffer reused across calls: a
        vectorised gather + cumsum over (K-1, N, O*h*w) costs several times more there."""
        k, n, o = self.terms.shape
        b = perm.shape[0]
        if n * o < 4096:
            return self.terms[perm[:, : k - 1]].cumsum(dim=1).add_(self.bias).view(-1, n, o)
        m = b * (k - 1)
        if self._buffer is None or self._buffer.shape[0] < m:
            self._buffer = self.terms.new_empty(m, n, o)
        h = self._buffer[:m]
        for i in range(b):
            rows = h[i * (k - 1) : (i + 1) * (k - 1)]
            torch.add(self.terms[perm[i, 0]], self.bias, out=rows[0])
            for j in range(1, k - 1):
                torch.add(rows[j - 1], self.terms[perm[i, j]], out=rows[j])
        return h

    def _clamp_pool_linear(self, h: Tensor) -> Tensor:
        """``rest`` = ReLU(6) -> global average pool -> Linear on per-pixel rows, in place: (M, N)."""
        return torch.einsum("mno,no->mn", h.clamp_(*self.clamp), self.w_pixels) + self.b_out

    def __call__(self, perm: Tensor, batch_size: int) -> Tensor:
        k, n, o = self.terms.shape
        b = perm.shape[0]
        h = self._prefix_sums(perm)  # (B*(K-1), N, O), tile layout
        if self.rest is None:
            return h[..., 0].view(b, k - 1, n)
        if self.w_pixels is not None:
            return self._clamp_pool_linear(h).view(b, k - 1, n)
        per = max(1, batch_size // n)
        out = []
        for start in range(0, h.shape[0], per):
            x = h[start : start + per].flatten(0, 1)  # (R*N, O), tile layout
            y = self.rest(x)
            if self.w_out is not None:
                r = y.shape[0] // n
                y = (y.view(r, n, -1) * self.w_out).sum(-1) + self.b_out  # (R, N)
            else:
                y = y.gather(1, self.t.repeat(y.shape[0] // n)[:, None]).view(-1, n)
            out.append(y)
        return torch.cat(out).view(b, k - 1, n)


def _clamp_pool_linear(rest: list[nn.Module], w_out: Tensor | None) -> tuple[tuple[float, float | None], Tensor | None]:
    """For ``rest`` = Unflatten(O, h, w) -> ReLU / ReLU6 -> global average pool -> Flatten -> (Dropout)
    -> Linear (the EfficientNet / MobileNet head after its 1x1 conv): the clamp bounds and the target
    row of the Linear spread over the ``h * w`` pixels, ``(N, O * h * w)``; ``(None, None)`` otherwise."""
    kinds = [type(m) for m in rest]
    if w_out is None or len(rest) < 5 or kinds[0] is not nn.Unflatten or kinds[2] is not nn.AdaptiveAvgPool2d:
        return (0.0, None), None
    act, pool = rest[1], rest[2]
    if type(act) not in (nn.ReLU, nn.ReLU6) or pool.output_size not in (1, (1, 1)) or kinds[3] is not nn.Flatten:
        return (0.0, None), None
    if any(k not in (nn.Dropout, nn.Identity) for k in kinds[4:-1]):
        return (0.0, None), None
    hw = math.prod(rest[0].unflattened_size[1:])
    bounds = (0.0, 6.0) if type(act) is nn.ReLU6 else (0.0, None)
    return bounds, (w_out / hw).repeat_interleave(hw, dim=1)  # (N, O*h*w)


def permutation(
    head: nn.Module,
    activations: Tensor,
    target: int | Tensor,
    n_orderings: int,
    seed: int = 0,
    batch_size: int = 1024,
    fast: bool | None = None,
) -> Tensor:
    r"""SHAP-CAM_P (Algorithm 1): Shapley values estimated over ``P`` random orderings.

    For each ordering ``pi`` (the same ``P`` orderings for every image, drawn on the CPU from
    ``seed``), maps are switched on one by one and map ``pi_j`` is credited with
    ``v(pi_1..pi_j) - v(pi_1..pi_{j-1})``; ``phi`` is the mean over orderings. Each ordering's
    credits sum to ``F^c(A) - F^c(0)`` exactly (the full and empty coalitions are shared). The
    error of ``phi`` decreases as ``1/sqrt(P)``.

    Fast path (``fast=None`` uses it when possible, ``fast=True`` requires it): if the head is
    channel-wise pools/ReLUs -> ``Flatten`` -> ``Linear`` -> rest (torchvision VGG and ResNet
    heads), zeroing map ``k`` zeroes its pooled block, so the first layer's pre-activation of a
    coalition is ``b + sum_{k in S} W[:, block_k] pooled_k``. The ``K`` per-map terms are
    computed once and summed cumulatively along each ordering; only the rest of the head runs
    per coalition (and of the last Linear only the target row).

    Args:
        n_orderings: ``P >= 1``.
        batch_size: coalitions evaluated per forward pass of the head (rows = coalitions * N).
    """
    a, t = _check(activations, target)
    n, k = a.shape[:2]
    if int(n_orderings) < 1:
        raise ValueError(f"n_orderings must be >= 1, got {n_orderings}")
    perms = orderings(int(n_orderings), k, seed).to(a.device)  # (P, K)
    with eval_mode(head), torch.no_grad():
        v_empty, v_full = _values(
            head, a, t, torch.stack([torch.zeros(k), torch.ones(k)]), batch_size
        )  # (N,)
        split = first_linear_terms(head, a, t) if fast is not False else None
        if fast and split is None:
            raise ValueError(
                "fast=True needs a head of channel-wise pools -> nn.Flatten(1) -> nn.Linear -> ...; "
                "use fast=None to fall back to evaluating the head on masked maps"
            )
        game = _FastGame(split, t) if split is not None else None
        per = max(1, batch_size // max(k - 1, 1))  # orderings per chunk
        phi = torch.zeros(n, k, dtype=torch.float64, device=a.device)
        for start in range(0, perms.shape[0], per):
            perm = perms[start : start + per]  # (B, K)
            b = perm.shape[0]
            inner = (
                game(perm, batch_size) if game is not None else _generic_values(head, a, t, perm, batch_size)
            )
            v = torch.cat(
                [v_empty.expand(b, 1, n), inner, v_full.expand(b, 1, n)], dim=1
            ).double()  # (B, K+1, N)
            gain = (v[:, 1:] - v[:, :-1]).permute(2, 0, 1).reshape(n, -1)  # (N, B*K), credited to perm[b, j]
            phi.scatter_add_(1, perm.reshape(1, -1).expand(n, -1), gain)
    return (phi / perms.shape[0]).to(a.dtype)
