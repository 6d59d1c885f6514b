r"""Localization metrics: the energy-based pointing game (Eq. 14, Table 5) and the hit/miss pointing game.

Boxes are ``x0, y0, x1, y1`` in pixels of the saliency map, ``x1, y1`` exclusive (the benchmarks'
convention); pixel ``(i, j)`` (row, column) has its centre at ``(j + 0.5, i + 0.5)`` and lies in a
box when its centre does. Several boxes of the target class count as their union.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cam_core.metrics.faithfulness import tie_order


def box_spans(boxes: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Which rows and columns each box covers: ``boxes`` (..., 4) -> ``(rows (..., H), cols (..., W))``
    bool, a pixel's centre ``(j + 0.5, i + 0.5)`` inside ``[x0, x1) x [y0, y1)``. The one definition of
    "pixel in box" (the boxes' masks are their outer product, :func:`box_masks`)."""
    h, w = size
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5  # (H,)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5  # (W,)
    rows = (ys >= boxes[..., 1:2]) & (ys < boxes[..., 3:4])  # (..., H)
    cols = (xs >= boxes[..., 0:1]) & (xs < boxes[..., 2:3])  # (..., W)
    return rows, cols


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """One bool mask per box: ``boxes`` (..., 4) -> (..., H, W)."""
    rows, cols = box_spans(boxes, size)
    return rows[..., :, None] & cols[..., None, :]


def boxes_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Union of ``boxes`` (M, 4) as a bool mask (H, W); M = 0 gives an all-False mask."""
    return box_masks(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), size).any(dim=0)


def batch_masks(boxes: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """One union mask per image: N x (M_i, 4) -> (N, H, W) bool."""
    return torch.stack([boxes_mask(b, size) for b in boxes])


def energy_pointing_game(saliency: Tensor, mask: Tensor) -> Tensor:
    r"""Eq. 14 per image: the share of the saliency's energy inside the box(es),
    ``sum_{(i,j) in bbox} s(u(L))_ij / sum_ij s(u(L))_ij``, in [0, 1] (Table 5 reports 100 * mean).

    ``saliency`` (N, H, W) non-negative; ``mask`` (N, H, W) bool, the union of the target's boxes.
    An image whose mask is empty (no box of the target class) gives NaN; an all-zero saliency
    (no energy to place) gives 0, so a method that returns an empty map is not credited.
    """
    if saliency.shape != mask.shape:
        raise ValueError(f"saliency {tuple(saliency.shape)} and mask {tuple(mask.shape)} must have "
                         "the same shape (N, H, W)")
    s = saliency.flatten(1).float()
    m = mask.flatten(1).to(s.device)
    total = s.sum(dim=1)
    inside = (s * m).sum(dim=1)
    tiny = torch.finfo(s.dtype).tiny
    share = torch.where(total > 0, inside / total.clamp_min(tiny), torch.zeros_like(total))
    return torch.where(m.any(dim=1), share, torch.full_like(share, float("nan")))


def default_tolerance(width: int) -> float:
    """Zhang et al.'s 15 px tolerance at 224 px, scaled to an image ``width`` px wide."""
    return 15.0 * width / 224.0


def pointing_game(saliency: Tensor, boxes: Sequence[Tensor], tolerance: float | None = None,
                  tie_seed: int | None = 0) -> Tensor:
    r"""Hit/miss pointing game (Zhang et al., 2016), per image: 1.0 when the saliency's maximum lies
    within ``tolerance`` pixels (Euclidean, from the pixel centre to the nearest box edge) of any of
    the image's ``boxes``, else 0.0; NaN when the image has no box.

    ``tolerance=None`` uses Zhang et al.'s 15 px at 224 px scaled to the map width
    (:func:`default_tolerance`: 4.3 px at 64 px). Ties for the maximum (a constant map, a 0/1 box)
    are broken in the seeded random order of :func:`cam_core.metrics.tie_order` (the one insertion and
    deletion use); ``tie_seed=None`` takes the first maximum in raster order, which points a constant
    map at the top-left corner.
    """
    n, h, w = saliency.shape
    if len(boxes) != n:
        raise ValueError(f"boxes must hold one (M_i, 4) tensor per image: got {len(boxes)} for {n} images")
    tol = default_tolerance(w) if tolerance is None else float(tolerance)
    key = tie_order(h * w, tie_seed, saliency.device)  # (P,) the order ties are resolved in
    flat_idx = key[saliency.flatten(1)[:, key].argmax(dim=1)]  # (N,) first maximum in that order
    py = (flat_idx // w).float() + 0.5
    px = (flat_idx % w).float() + 0.5
    out = torch.full((n,), float("nan"), device=saliency.device)
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b, dtype=torch.float32, device=saliency.device).reshape(-1, 4)
        if b.shape[0] == 0:
            continue
        dx = torch.clamp(torch.maximum(b[:, 0] - px[i], px[i] - b[:, 2]), min=0)  # (M,)
        dy = torch.clamp(torch.maximum(b[:, 1] - py[i], py[i] - b[:, 3]), min=0)
        out[i] = float(bool(((dx**2 + dy**2).sqrt() <= tol).any()))
    return out
