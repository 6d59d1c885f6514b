r"""ROAD's fill: noisy linear imputation of removed pixels (Rong et al., ICML 2022, Sec. 4).

A removed pixel becomes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones,
1/12 for the diagonals; neighbours outside the image are dropped), where a removed neighbour is
itself unknown. For the removed set ``R`` this is the sparse linear system, one per image and
channel,

    D_i u_i - sum_{j in R} w_ij u_j = sum_{j kept} w_ij x_j      (i in R, D_i = sum_j w_ij),

a discrete Laplace equation with the kept pixels as boundary values: a linear ramp is reproduced
exactly inside the image, a constant everywhere. The matrix is symmetric and positive definite
when every connected removed region touches a kept pixel, so it is solved here by batched
conjugate gradients (3x3 convolutions, all images and channels at once) to a relative residual
of ``tol``. Gaussian noise of standard deviation ``noise`` is then added to the removed pixels
only, so that the fill carries no smooth-interpolation artefact a model could key on (the paper's
point). An image with no kept pixel at all has nothing to interpolate from: it becomes ``empty``
(0 unless given: black in un-normalised pixel space).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: the neighbour weights of Rong et al.'s NoisyLinearImputer (direct 1/6, diagonal 1/12)
ROAD_WEIGHTS: tuple[tuple[float, float, float], ...] = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6),
                                                        (1 / 12, 1 / 6, 1 / 12))
#: the noise standard deviation of the paper's imputer (pixel values in [0, 1])
ROAD_NOISE = 0.01


def _stencil(u: Tensor) -> Tensor:
    """``sum_j w_ij u_j`` over the 8 neighbours (zero outside the image): (M, 1, H, W) -> same.

    The weights are ``([1, 2, 1]^T [1, 2, 1] - 4 delta) / 12``: two 3-tap passes, faster than a conv."""
    p = F.pad(u, (1, 1, 0, 0))
    rows = p[..., :-2] + 2 * u + p[..., 2:]
    p = F.pad(rows, (0, 0, 1, 1))
    return (p[..., :-2, :] + 2 * rows + p[..., 2:, :] - 4 * u) / 12


def _push_pull(value: Tensor, weight: Tensor, empty: Tensor) -> Tensor:
    """A smooth first guess of every pixel from the kept ones (coarse-to-fine normalised averages):
    ``value`` = kept * x, ``weight`` = kept, both (M, 1, H, W); ``empty`` (M, 1, 1, 1) where nothing is kept."""
    h, w = value.shape[-2:]
    if h == 1 and w == 1:
        return torch.where(weight > 0, value / weight.clamp_min(1e-12), empty)
    size = ((h + 1) // 2, (w + 1) // 2)
    coarse = _push_pull(F.adaptive_avg_pool2d(value, size), F.adaptive_avg_pool2d(weight, size), empty)
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(weight > 0, value / weight.clamp_min(1e-12), up)


def road_impute(x: Tensor, keep_mask: Tensor, seed: int | None = 0, *, noise: float | Tensor = ROAD_NOISE,
                empty: float | Tensor = 0.0, tol: float = 1e-4, max_iter: int = 2000) -> Tensor:
    """Noisy linear imputation: ``x`` with every pixel where ``keep_mask`` is False imputed.

    Args:
        x: (N, C, H, W) images (any value space; the imputation is linear, so it commutes with a
            per-channel normalisation, only ``noise`` is in the space of ``x``).
        keep_mask: (N, H, W) or (N, 1, H, W), True (or 1) where the pixel is kept.
        seed: the noise's seed (a CPU generator: the same noise on every device); one (C, H, W)
            noise field shared by the batch, so an image's fill does not depend on its batch.
        noise: standard deviation of the noise added to imputed pixels (a float, or (C,) per channel);
            0 gives the plain linear imputation.
        empty: the value (a float, or (C,) per channel) of an image that keeps no pixel.
        tol, max_iter: conjugate gradients stop at a residual below ``tol`` times the right-hand
            side's norm (per image and channel), or after ``max_iter`` steps. The default 1e-4 leaves
            an imputation error of about 2e-3 on [0, 1] pixels, a fifth of the noise.

    Returns:
        (N, C, H, W): kept pixels exactly ``x``, removed ones imputed plus noise.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W); got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    keep = keep_mask[:, None] if keep_mask.dim() == 3 else keep_mask
    if keep.shape != (n, 1, h, w):
        raise ValueError(f"keep_mask must be (N, H, W) = {(n, h, w)} matching x; got {tuple(keep_mask.shape)}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xs = x.to(dtype).reshape(n * c, 1, h, w)  # one system per image and channel
    kept = keep.to(dtype).repeat_interleave(c, dim=0)  # (M, 1, H, W), M = N*C
    removed = 1 - kept
    diag = _stencil(torch.ones(1, 1, h, w, dtype=dtype, device=x.device))  # (1, 1, H, W) D_i

    def apply(v: Tensor, rem: Tensor) -> Tensor:  # the system's matrix on the removed pixels
        return rem * (diag * v - _stencil(rem * v))

    b = removed * _stencil(kept * xs)
    fill = torch.as_tensor(empty, dtype=dtype, device=x.device).reshape(-1)
    fill = fill.expand(c).repeat(n).view(n * c, 1, 1, 1)
    # start from a coarse-to-fine average of the kept pixels (exact for a constant image); an image
    # without a kept pixel is one removed region with no boundary: its residual is 0 from the start
    # and it stays `empty`
    u = removed * _push_pull(kept * xs, kept, fill)
    r = b - apply(u, removed)
    rr = (r * r).sum(dim=(2, 3), keepdim=True)  # (M, 1, 1, 1)
    limit = (tol * b.flatten(1).norm(dim=1)).view(-1, 1, 1, 1) ** 2
    # nothing kept: nothing to solve (the residual is rounding only, and b = 0 would never stop the loop)
    limit = torch.where(kept.sum(dim=(2, 3), keepdim=True) > 0, limit, torch.inf)
    # conjugate gradients on the systems not yet converged only: a converged system is set aside
    # (so its result does not depend on the others in the batch) and the rest are compacted
    ids = torch.arange(u.shape[0], device=x.device)
    cu, cr, cp, crr, clim, crem = u, r, r.clone(), rr, limit, removed
    tiny = torch.finfo(dtype).tiny
    for _ in range(max_iter):
        active = (crr > clim).view(-1)
        if not bool(active.all()):
            u[ids[~active]] = cu[~active]
            ids, cu, cr, cp, crr, clim, crem = (t[active] for t in (ids, cu, cr, cp, crr, clim, crem))
            if ids.numel() == 0:
                break
        ap = apply(cp, crem)
        pap = (cp * ap).sum(dim=(2, 3), keepdim=True)
        clim = torch.where(pap > 0, clim, torch.inf)  # a direction of no curvature: stop there (rounding)
        alpha = torch.where(pap > 0, crr / pap.clamp_min(tiny), 0.0)
        cu = cu + alpha * cp
        cr = cr - alpha * ap
        rr_new = (cr * cr).sum(dim=(2, 3), keepdim=True)
        cp = cr + (rr_new / crr.clamp_min(tiny)) * cp
        crr = rr_new
    if ids.numel():
        u[ids] = cu
    out = kept * xs + removed * u
    out = out.view(n, c, h, w)
    std = torch.as_tensor(noise, dtype=dtype).reshape(-1)
    if bool((std != 0).any()):
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        eps = torch.randn((c, h, w), generator=g, dtype=dtype).to(x.device)  # (C, H, W), shared by the batch
        eps = eps * std.to(x.device).expand(c).view(c, 1, 1)
        out = out + (1 - keep.to(dtype)) * eps
    return out.to(x.dtype)
