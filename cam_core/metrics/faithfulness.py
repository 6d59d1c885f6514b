r"""Faithfulness metrics: IC, AD, ADD (Eqs. 11-13) and insertion / deletion AUC (Table 4).

All functions are batched: ``x`` is ``(N, C, H, W)`` in the model's input space, ``saliency`` is
``(N, H, W)`` in ``[0, 1]`` (``s(u(L))``), ``target`` is ``(N,)`` long; results are ``(N,)`` tensors
on the input's device, one value per image. The paper's aggregates are means (x 100 for IC/AD/ADD),
see :func:`cam_core.evaluation.summarize`.

Scores are **softmax** probabilities of the target class, as in the paper, also for multi-label
models (the paper scores its VOC / COCO VGG16 with softmax over the logits too).

Where the product ``s * x`` is taken. The paper multiplies *the image* by the map, so that a map
value 0 makes a pixel black. Our benchmarks hand images already in the model's input space,
possibly normalised as ``(pixel - mean) / std``. With ``mean``/``std`` given, every mask is
applied in pixel space: un-normalise, multiply, re-normalise, i.e.
``x' = x * m + (m - 1) * mean / std``, so that "0" means a black pixel as in the paper (and as in
the Score-CAM reference code, which masks the un-normalised image). Multiplying the normalised
tensor instead (pytorch-grad-cam's convention) would turn a removed pixel into the dataset mean
colour, not black; pass ``mean=None, std=None`` to get that (or for inputs that are not
normalised, where both conventions coincide).

Conditioned models (VQA, a bound context per image): every forward pass here feeds a batch of
``R * N`` rows in the tile layout of :mod:`cam_core.methods.base` (row ``b`` is image ``b % N``),
chunked into whole tiles.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam_core.metrics.road import ROAD_NOISE, road_impute
from cam_core.runtime import eval_mode

#: what a removed pixel can become (:func:`baseline_image`); "zero" is the default everywhere
BASELINES = ("zero", "mean", "blur", "road")
#: a soft mask's pixels above this are the "kept" ones ROAD imputes from (:func:`fill_image`)
ROAD_KEEP_THRESHOLD = 0.5


# ---- masking in the right space ------------------------------------------------------------
def _channel_stats(x: Tensor, mean: Tensor | None, std: Tensor | None) -> tuple[Tensor, Tensor] | None:
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the input's normalisation) or neither "
                         "(input not normalised)")
    if mean is None:
        return None
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if m.numel() not in (1, c) or s.numel() not in (1, c):
        raise ValueError(f"mean/std must have 1 or {c} entries (one per channel); "
                         f"got {m.numel()} and {s.numel()}")
    return m.expand(c).view(1, c, 1, 1), s.expand(c).view(1, c, 1, 1)


def black(x: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """A black image (pixel value 0) in the model's input space: ``-mean/std``, or 0 if not normalised."""
    stats = _channel_stats(x, mean, std)
    if stats is None:
        return torch.zeros_like(x)
    m, s = stats
    return (-m / s).expand_as(x)


def blend(x: Tensor, mask: Tensor, fill: Tensor) -> Tensor:
    """``x * mask + fill * (1 - mask)``; ``mask`` (N, H, W) or (N, 1, H, W) broadcast over channels."""
    if mask.dim() == 3:
        mask = mask[:, None]
    mask = mask.to(x.dtype)
    return x * mask + fill * (1 - mask)


def mask_image(x: Tensor, mask: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """The paper's ``mask * x`` taken in pixel space: ``mask`` 0 gives a black pixel (module docstring)."""
    return blend(x, mask, black(x, mean, std))


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable gaussian blur with reflect padding (kernel radius ceil(3 sigma)); (N, C, H, W) -> same."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def check_baseline(baseline: str) -> str:
    """``baseline`` if it is one of :data:`BASELINES`, else a ValueError listing them."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    return baseline


def baseline_image(x: Tensor, baseline: str = "zero", mean: Tensor | None = None, std: Tensor | None = None,
                   blur_sigma: float | None = None, keep: Tensor | None = None, seed: int | None = 0) -> Tensor:
    """What a removed pixel becomes, in the model's input space (N, C, H, W).

    - ``"zero"``: a black pixel (pixel value 0; ``-mean/std`` for normalised input), the same "absent"
      as the map value 0 in ``s * x`` of Eqs. 11-13, so all faithfulness metrics share one notion
      of a removed pixel. The default.
    - ``"mean"``: each image's own per-channel mean colour (the same pixels whether the mean is
      taken before or after a per-channel normalisation).
    - ``"blur"``: a gaussian-blurred copy of ``x`` (RISE's insertion start); ``blur_sigma`` defaults to
      5 px at 224 px (RISE), scaled with the image width (1.43 px at 64 px).
    - ``"road"``: ROAD's noisy linear imputation from the pixels where ``keep`` (N, H, W) is True
      (:func:`cam_core.metrics.road_impute`, noise 0.01 in pixel space, seeded by ``seed``); needs ``keep``.
    """
    check_baseline(baseline)
    if baseline == "zero":
        return black(x, mean, std)
    if baseline == "mean":
        _channel_stats(x, mean, std)
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        sigma = 5.0 * x.shape[-1] / 224 if blur_sigma is None else float(blur_sigma)
        return gaussian_blur(x, sigma)
    if keep is None:
        raise ValueError("baseline='road' imputes removed pixels from the kept ones: pass keep= (N, H, W) "
                         "bool, or use fill_image(x, mask, 'road')")
    stats = _channel_stats(x, mean, std)
    noise = ROAD_NOISE if stats is None else ROAD_NOISE / stats[1].reshape(-1)
    return road_impute(x, keep, seed, noise=noise, empty=black(x, mean, std)[0, :, 0, 0])


def fill_image(x: Tensor, mask: Tensor, baseline: str = "zero", mean: Tensor | None = None,
               std: Tensor | None = None, blur_sigma: float | None = None, seed: int | None = 0) -> Tensor:
    """``x * mask + b * (1 - mask)`` with ``b`` the ``baseline`` fill (:func:`baseline_image`): (N, C, H, W).

    ``mask`` (N, H, W) in [0, 1] (a 0/1 keep mask, or a soft map as in Eqs. 11-13). For ``"road"`` the
    fill is imputed from the pixels whose mask exceeds :data:`ROAD_KEEP_THRESHOLD` (for a 0/1 mask:
    the kept ones), so a removed pixel is never imputed from itself. ``"zero"`` is exactly
    :func:`mask_image` (bit for bit).
    """
    if baseline == "road":
        keep = (mask[:, 0] if mask.dim() == 4 else mask).to(x.dtype) > ROAD_KEEP_THRESHOLD
        fill = baseline_image(x, "road", mean, std, keep=keep, seed=seed)
    else:
        fill = baseline_image(x, baseline, mean, std, blur_sigma)
    return blend(x, mask, fill)


# ---- scoring tiled batches -------------------------------------------------------------------
def tiled_target_softmax(model: nn.Module, build: Callable[[int, int], Tensor], n_tiles: int, target: Tensor,
                         batch_size: int = 128) -> Tensor:
    """Softmax score of ``target`` for ``n_tiles`` tiles of ``N`` images each: (n_tiles, N).

    ``build(r0, r1)`` returns tiles ``r0 .. r1-1`` as one ``((r1 - r0) * N, C, H, W)`` batch in tile
    layout; each forward pass holds ``max(1, batch_size // N)`` whole tiles. The model runs in eval
    mode (its flags restored) without gradients. On the CPU the batch is fed channels-last (about
    2x faster for conv nets with oneDNN; same values up to float rounding).
    """
    n = target.shape[0]
    per = max(1, int(batch_size) // n)
    out = []
    with torch.no_grad(), eval_mode(model):
        for r0 in range(0, n_tiles, per):
            r1 = min(n_tiles, r0 + per)
            xs = build(r0, r1)  # ((r1-r0)*N, C, H, W)
            if xs.device.type == "cpu" and xs.dim() == 4:
                xs = xs.contiguous(memory_format=torch.channels_last)
            probs = model(xs).float().softmax(dim=1)  # ((r1-r0)*N, num_classes)
            picked = probs.gather(1, target.repeat(r1 - r0)[:, None]).squeeze(1)
            out.append(picked.view(r1 - r0, n))
    return torch.cat(out)  # (n_tiles, N)


def _check(x: Tensor, saliency: Tensor, target: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W); got shape {tuple(x.shape)}")
    if saliency.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"saliency must be (N, H, W) = {(x.shape[0], *x.shape[-2:])} matching x; got "
                         f"{tuple(saliency.shape)} (upsample the CAM to the input size, e.g. "
                         "CAMResult.saliency)")
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must be a (N,) tensor of class ids; got shape {tuple(target.shape)}")


# ---- IC, AD, ADD -------------------------------------------------------------------------------
class ConfidenceScores(NamedTuple):
    """Softmax target scores, each (N,): of x (``Y^c``), of ``s*x`` (``O^c``), of ``(1-s)*x`` (``D^c``)."""

    original: Tensor
    explanation: Tensor
    inverted: Tensor


def confidence_scores(model: nn.Module, x: Tensor, saliency: Tensor, target: Tensor, *,
                      mean: Tensor | None = None, std: Tensor | None = None, batch_size: int = 128,
                      baseline: str = "zero", blur_sigma: float | None = None,
                      seed: int | None = 0) -> ConfidenceScores:
    """``Y^c, O^c, D^c`` of Eqs. 11-13 in one tiled pass: tiles ``[x, s*x, (1-s)*x]``.

    ``s * x`` means ``x * s + b * (1 - s)`` with ``b`` the ``baseline`` fill (:func:`fill_image`;
    the default ``"zero"``, black, is the paper's product, unchanged bit for bit)."""
    _check(x, saliency, target)
    check_baseline(baseline)
    s = saliency.to(x.dtype)
    if baseline == "zero":
        fill = black(x, mean, std)
        images = [lambda: x, lambda: blend(x, s, fill), lambda: blend(x, 1 - s, fill)]
    else:
        images = [lambda: x] + [lambda m=m: fill_image(x, m, baseline, mean, std, blur_sigma, seed)
                                for m in (s, 1 - s)]

    def build(r0: int, r1: int) -> Tensor:
        return torch.cat([make() for make in images[r0:r1]])

    y, o, d = tiled_target_softmax(model, build, 3, target, batch_size)
    return ConfidenceScores(y, o, d)


def increase_in_confidence(original: Tensor, explanation: Tensor) -> Tensor:
    """Eq. 11, per image: ``1[Y^c < O^c]`` as float (N,). IC = 100 * mean."""
    return (original < explanation).float()


def average_drop(original: Tensor, explanation: Tensor) -> Tensor:
    """Eq. 12, per image: ``max(0, Y^c - O^c) / Y^c`` (N,). AD = 100 * mean; lower is better."""
    return (original - explanation).clamp_min(0) / original.clamp_min(torch.finfo(original.dtype).tiny)


def average_drop_in_deletion(original: Tensor, inverted: Tensor) -> Tensor:
    """Eq. 13, per image: ``(Y^c - D^c) / Y^c`` (N,), not clipped (may be negative). ADD = 100 * mean."""
    return (original - inverted) / original.clamp_min(torch.finfo(original.dtype).tiny)


# ---- insertion / deletion -------------------------------------------------------------------------
#: how :func:`pixel_ranks` and the hit pointing game break ties by default (part of the evaluation cache
#: key: changing it changes insertion/deletion and pointing numbers); v2: the pointing game too
TIE_BREAK = "seeded-permutation-v2"


def tie_order(n_pixels: int, seed: int | None = 0, device: torch.device | str = "cpu") -> Tensor:
    """The secondary sort key of :func:`pixel_ranks`: a random permutation of ``0 .. n_pixels - 1``
    drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (the same on every device), or
    raster order ``arange(n_pixels)`` for ``seed=None``. (P,) long."""
    if seed is None:
        return torch.arange(n_pixels, device=device)
    return torch.randperm(n_pixels, generator=torch.Generator().manual_seed(int(seed))).to(device)


def pixel_ranks(saliency: Tensor, seed: int | None = 0) -> Tensor:
    """Rank of each pixel by saliency, 0 = most salient: (N, H, W) -> (N, H*W) long.

    Ties among equal saliency values (a constant map, or the zeros a ReLU leaves: often 15% of a
    Grad-CAM map) are broken by a seeded random permutation of the pixel positions used as the
    secondary sort key (:func:`tie_order`): a tie is resolved in the permutation's order, the
    same for every image of the batch and on every device, so a result does not depend on the
    batching and is reproduced exactly by the same ``seed``. Raster order (row-major, smaller
    index first; the previous behaviour) favours the top rows of the image and moves an AUC by
    as much as the gaps between methods; it is what ``seed=None`` gives.
    """
    flat = saliency.flatten(1)  # (N, P)
    key = tie_order(flat.shape[1], seed, flat.device)  # (P,) secondary key
    order = key[torch.sort(flat[:, key], dim=1, descending=True, stable=True).indices]  # (N, P)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(n_pixels: int, steps: int = 40) -> list[int]:
    """How many top pixels each delta = r / steps keeps: round(delta * P), halves rounded up."""
    return [(2 * r * n_pixels + steps) // (2 * steps) for r in range(steps + 1)]


def insertion_deletion(model: nn.Module, x: Tensor, saliency: Tensor, target: Tensor, *, steps: int = 40,
                       baseline: str = "zero", mean: Tensor | None = None, std: Tensor | None = None,
                       blur_sigma: float | None = None, batch_size: int = 128,
                       curves: tuple[str, ...] = ("insertion", "deletion"),
                       return_curves: bool = False, tie_seed: int | None = 0,
                       seed: int | None = 0) -> dict[str, Tensor]:
    r"""Insertion and deletion AUC (Table 4), per image.

    At ``delta = r / steps`` (``r = 0 .. steps``; the paper: 0, 0.025, ..., 1) the top ``100 delta`` %
    pixels of the saliency (ties: a random order seeded by ``tie_seed``, :func:`pixel_ranks`; ``None``
    gives raster order) are *kept* on top of the baseline
    (insertion) or *removed*, i.e. replaced by the baseline (deletion); the softmax score of ``target``
    is measured and the AUC is the trapezoid rule over ``delta`` in [0, 1]. Higher insertion and
    lower deletion are better. ``baseline`` is what a removed pixel becomes (:func:`baseline_image`;
    default ``"zero"`` = black in pixel space, the same absence as in IC/AD/ADD; ``"road"`` imputes
    each step's removed pixels from its kept ones, noise seeded by ``seed``).

    All ``len(curves) * (steps + 1)`` perturbed copies of the batch are scored in tiles (row ``b``
    is image ``b % N``), ``batch_size`` rows at most per forward pass.

    Returns ``{"insertion": (N,), "deletion": (N,)}`` (those in ``curves``), plus
    ``"insertion_curve"`` / ``"deletion_curve"`` (N, steps + 1) with ``return_curves``.
    """
    _check(x, saliency, target)
    for c in curves:
        if c not in ("insertion", "deletion"):
            raise ValueError(f"curves must name 'insertion' and/or 'deletion', got {c!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n, _, h, w = x.shape
    ranks = pixel_ranks(saliency, tie_seed).view(n, 1, h, w)  # (N, 1, H, W)
    counts = step_counts(h * w, steps)
    check_baseline(baseline)
    fill = None if baseline == "road" else baseline_image(x, baseline, mean, std, blur_sigma)
    per_curve = steps + 1

    def build(r0: int, r1: int) -> Tensor:
        masks = []
        for r in range(r0, r1):
            curve, step = curves[r // per_curve], r % per_curve
            keep = ranks < counts[step]  # (N, 1, H, W) top pixels
            masks.append(keep if curve == "insertion" else ~keep)
        if fill is not None:
            return torch.cat([blend(x, m, fill) for m in masks])
        m = torch.cat(masks)  # (R * N, 1, H, W): every tile's imputation in one batched solve
        return fill_image(x.repeat(len(masks), 1, 1, 1), m[:, 0], "road", mean, std, seed=seed)

    scores = tiled_target_softmax(model, build, len(curves) * per_curve, target, batch_size)  # (R, N)
    out: dict[str, Tensor] = {}
    for i, c in enumerate(curves):
        curve = scores[i * per_curve : (i + 1) * per_curve].T  # (N, steps + 1)
        out[c] = torch.trapezoid(curve, dx=1.0 / steps, dim=1)
        if return_curves:
            out[f"{c}_curve"] = curve
    return out


def insertion_auc(model: nn.Module, x: Tensor, saliency: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Insertion AUC per image (N,); see :func:`insertion_deletion`."""
    return insertion_deletion(model, x, saliency, target, curves=("insertion",), **kwargs)["insertion"]


def deletion_auc(model: nn.Module, x: Tensor, saliency: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Deletion AUC per image (N,); see :func:`insertion_deletion`."""
    return insertion_deletion(model, x, saliency, target, curves=("deletion",), **kwargs)["deletion"]
