r"""How alike two explanation maps are: Spearman rank correlation and SSIM, per image (the
similarity measures of the model-randomization test, Adebayo et al., NeurIPS 2018, Sec. 3).

Both take ``(N, H, W)`` maps and return ``(N,)`` float64 tensors on the CPU.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor


def _flat(a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"maps must be two (N, H, W) tensors of one shape; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return (a.detach().double().cpu().flatten(1).numpy(), b.detach().double().cpu().flatten(1).numpy())


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of maps (ties get their average rank): (N,).

    A constant map has no ranking: the pair scores 1 when both maps are identical and 0 otherwise
    (e.g. a map that a randomized head turned all-zero has lost the original's ranking)."""
    fa, fb = _flat(a, b)
    ra = pd.DataFrame(fa).rank(axis=1, method="average").to_numpy()
    rb = pd.DataFrame(fb).rank(axis=1, method="average").to_numpy()
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    same = np.all(fa == fb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.where(same, 1.0, 0.0))
    return torch.from_numpy(rho)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, win_size: int = 7) -> Tensor:
    """Mean structural similarity of each pair of maps in [0, ``data_range``]: (N,).

    Wang et al. (2004) with scikit-image's defaults (``structural_similarity``: a ``win_size``
    uniform window, sample covariances, K1 = 0.01, K2 = 0.03, the mean over the windows that lie
    inside the image), so the values equal ``skimage.metrics.structural_similarity(a_i, b_i,
    data_range=data_range)``."""
    _flat(a, b)
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps must be at least win_size={win_size} px on each side; got {tuple(a.shape[-2:])}")
    x, y = a.detach().double().cpu()[:, None], b.detach().double().cpu()[:, None]  # (N, 1, H, W)
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731  the windows inside the image
    ux, uy = pool(x), pool(y)
    norm = win_size**2 / (win_size**2 - 1)  # sample covariance
    vx, vy = norm * (pool(x * x) - ux * ux), norm * (pool(y * y) - uy * uy)
    vxy = norm * (pool(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
