"""Training augmentations of the embedded benchmark: what makes masked images in distribution.

The faithfulness metrics (Eq. 11-13, insertion/deletion) score the model on images multiplied
by a smooth map toward black (the fill value, pixel 0) or with regions removed; a model that never
saw such images reads the masking itself as evidence (generator v2's models lost 63% confidence
on a uniform 0.5 map). Here a share of each training batch is

- multiplied by a random smooth mask ``m`` in [0, 1] toward black (``x * m``: the pixel-space
  operation of :func:`cam_core.metrics.mask_image`), from bilinear-upsampled noise at a random
  scale passed through a soft threshold at a random level, so from a gentle dimming to hard
  removal of most of the image;
- jittered in brightness and contrast;
- rotated by a multiple of 90 degrees (the classes are rotation-free, labels keep).

Everything draws from the caller's ``torch.Generator``: deterministic under a seed.
Images are pixels in [0, 1], (B, 3, H, W), before normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SCALES: tuple[int, ...] = (2, 3, 4, 6, 8)  # noise cells across the image


def smooth_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` random smooth masks in [0, 1], (n, 1, size, size): upsampled noise at a random scale,
    min-max scaled per mask, through a sigmoid at a random level (0.1-0.9) and sharpness."""
    g = generator
    out = torch.empty(n, 1, size, size)
    scale = torch.tensor(SCALES)[torch.randint(len(SCALES), (n,), generator=g)]
    for c in scale.unique().tolist():
        sel = scale == c
        low = torch.rand(int(sel.sum()), 1, c, c, generator=g)
        out[sel] = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    lo = out.amin(dim=(2, 3), keepdim=True)
    hi = out.amax(dim=(2, 3), keepdim=True)
    out = (out - lo) / (hi - lo).clamp(min=1e-6)
    level = 0.1 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    sharp = 4 + 26 * torch.rand(n, 1, 1, 1, generator=g)
    return torch.sigmoid((out - level) * sharp)


def jitter(x: Tensor, generator: torch.Generator, brightness: float = 0.3, contrast: float = 0.3) -> Tensor:
    """Per-image contrast (around the image's mean) then brightness factors in ``1 +- amount``."""
    g = generator
    n = x.shape[0]
    c = 1 + contrast * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    b = 1 + brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((mean + c * (x - mean)) * b).clamp(0, 1)


def augment(x: Tensor, generator: torch.Generator, mask_share: float = 0.5) -> Tensor:
    """The training augmentation: pixels (B, 3, H, W) in [0, 1] -> augmented pixels, same shape.
    ``mask_share`` of the images (chosen at random) are multiplied by a :func:`smooth_masks` mask."""
    g = generator
    n, _, h, w = x.shape
    k = int(torch.randint(4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    x = jitter(x, g)
    masked = torch.rand(n, generator=g) < mask_share
    m = smooth_masks(n, h, g)  # drawn for every image: the stream does not depend on the coin flips
    return torch.where(masked[:, None, None, None], x * m, x)
