r"""Contrast-free drop metrics: AD and ADD on the top ``q`` % of the map's pixels (issue 20).

Eqs. 12-13 multiply the image by the map itself, so a map's *contrast* moves them: the same
ranking raised to the power 4 keeps less of the image than raised to 0.25, and AD rises. Here
only the map's ranking counts. With ``keep_q`` the 0/1 mask of the top ``q`` % pixels (ties in
the seeded order of :func:`cam_core.metrics.pixel_ranks`) and ``b`` the fill (:data:`BASELINES`:
black by default, ``"road"`` for ROAD's imputation):

- ``AD@q``  = ``max(0, Y^c - O_q^c) / Y^c``, ``O_q`` the score of ``x keep_q + b (1 - keep_q)``
  (lower is better: the top pixels alone keep the score);
- ``ADD@q`` = ``(Y^c - D_q^c) / Y^c``, ``D_q`` the score with the top ``q`` % removed (higher is
  better: removing them destroys the score).

Any monotone rescaling of the map (``s ** p``) leaves both unchanged. Per image, (N,) tensors; the
tables report 100 x the mean, like AD / ADD.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.metrics.faithfulness import (
    _check,
    average_drop,
    average_drop_in_deletion,
    check_baseline,
    fill_image,
    pixel_ranks,
    tiled_target_softmax,
)

#: the shares of pixels kept / removed (in %), one column each: AD@10, ADD@10, ...
TOP_Q: tuple[int, ...] = (10, 25, 50)


def drop_metric_names(qs: tuple[int, ...] = TOP_Q) -> list[str]:
    """The column names of :func:`top_q_drops`: ``["AD@10", "ADD@10", "AD@25", ...]``."""
    return [f"{kind}@{q}" for q in qs for kind in ("AD", "ADD")]


def parse_drop_metric(name: str) -> tuple[str, int]:
    """``"AD@25"`` -> ``("AD", 25)``; a ValueError for anything else."""
    kind, _, q = name.partition("@")
    if kind not in ("AD", "ADD") or not q.isdigit() or not 0 < int(q) < 100:
        raise ValueError(f"a contrast-free drop metric is 'AD@q' or 'ADD@q' with q in 1..99 (%), got {name!r}")
    return kind, int(q)


def top_q_masks(saliency: Tensor, q: float, tie_seed: int | None = 0) -> Tensor:
    """The 0/1 mask of the top ``q`` % pixels of each map: (N, H, W) -> (N, H, W) bool
    (``round(q/100 * H*W)`` pixels; ties in the seeded order of :func:`pixel_ranks`)."""
    if not 0 < q < 100:
        raise ValueError(f"q must be a share of pixels in % strictly between 0 and 100, got {q}")
    n, h, w = saliency.shape
    count = int(round(q / 100 * h * w))
    return (pixel_ranks(saliency, tie_seed) < count).view(n, h, w)


def top_q_drops(model: nn.Module, x: Tensor, saliency: Tensor, target: Tensor, qs: tuple[int, ...] = TOP_Q, *,
                baseline: str = "zero", mean: Tensor | None = None, std: Tensor | None = None,
                blur_sigma: float | None = None, batch_size: int = 128, tie_seed: int | None = 0,
                seed: int | None = 0) -> dict[str, Tensor]:
    """``{"AD@q": (N,), "ADD@q": (N,)}`` for each ``q`` in ``qs`` (module docstring), one tiled pass:
    tiles ``[x, keep_q1 x, (1 - keep_q1) x, keep_q2 x, ...]``."""
    _check(x, saliency, target)
    check_baseline(baseline)
    masks = [top_q_masks(saliency, q, tie_seed) for q in qs]
    tiles = [None] + [m for keep in masks for m in (keep, ~keep)]

    def build(r0: int, r1: int) -> Tensor:
        return torch.cat([x if m is None else fill_image(x, m, baseline, mean, std, blur_sigma, seed)
                          for m in tiles[r0:r1]])

    scores = tiled_target_softmax(model, build, len(tiles), target, batch_size)  # (1 + 2 len(qs), N)
    y = scores[0]
    out: dict[str, Tensor] = {}
    for i, q in enumerate(qs):
        out[f"AD@{q}"] = average_drop(y, scores[1 + 2 * i])
        out[f"ADD@{q}"] = average_drop_in_deletion(y, scores[2 + 2 * i])
    return out
