"""Training augmentations of the embedded benchmark: what makes masked images in distribution,
and how much of each object a mask leaves (the *evidence* the training target follows).

The faithfulness metrics (Eq. 11-13, insertion/deletion) score the model on images multiplied
by a map toward black (the fill value, pixel 0) or with pixels removed. A model must (a) have
seen such images, and (b) answer them by what is left of the object: a model trained to keep
its label on an image whose object was masked away learns "heavily masked = unsure" whatever
is masked, and then scores the ground-truth box (everything *but* the object black) worse than
a uniformly dimmed image (benchmark v3's models, issue 11). So a share of each training batch is
multiplied by a mask ``m`` in [0, 1] of one of the kinds the metrics apply (:data:`MASK_KINDS`):

- ``"smooth"``: bilinear-upsampled noise at a random scale through a soft threshold at a random
  level (a CAM upsampled from its 8 x 8 maps, from gentle to hard);
- ``"constant"``: one level for the whole image (the ``Uniform`` map);
- ``"rectangle"``: a random rectangle kept and the rest black, or removed (the ``Box`` map and its
  inverse);
- ``"pixels"``: i.i.d. per-pixel noise, either as values or thresholded to keep a random share of
  the pixels (the ``Random`` map; insertion/deletion's scattered pixels);
- ``"object"``: the box of one of the image's objects, widened by a random margin, kept with the
  rest black, or removed (what a map on the object does: the ``Box`` map, a good CAM, and their
  inverses); random rectangles (above) keep the model from reading "one kept rectangle" as an
  object without looking inside;

and each object's **evidence** is the mean of ``m`` over its box (1 for an unmasked image):
:func:`evidence_targets` turns it into the training target (the label in proportion to the
evidence left, the rest spread as "no idea"). Then every image is jittered in contrast (and
mildly in brightness: a dimmed image is a mask, with less evidence) and rotated by a multiple of
90 degrees (the classes are rotation-free; boxes need not follow, the evidence is computed first).

All of the above is the *evidence* recipe (``TrainConfig(target="evidence")``, benchmark v4's models,
kept as an ablation): its target is computed from the ground-truth boxes, so what the box-based metrics
score leaks into training (issue 20). The default *label* recipe uses :func:`label_augment`: labels
only, no box anywhere (rotations, jitter and, optionally, masks whose kind does not depend on where
the objects are, with the label unchanged).

Everything draws from the caller's ``torch.Generator``: deterministic under a seed.
Images are pixels in [0, 1], (B, 3, H, W), before normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cam_core.metrics.localization import box_masks, box_spans

SCALES: tuple[int, ...] = (2, 3, 4, 6, 8)  # noise cells across the image
MASK_KINDS: tuple[str, ...] = ("smooth", "constant", "rectangle", "pixels", "object")


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


def constant_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` constant masks at a uniform random level in [0, 1], (n, 1, size, size)."""
    return torch.rand(n, 1, 1, 1, generator=generator).expand(n, 1, size, size).clone()


def rectangle_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` 0/1 masks, (n, 1, size, size): a random axis-aligned rectangle (sides 10-70% of the
    image) kept with the rest removed, or (half of them) removed with the rest kept."""
    g = generator
    side = (0.1 + 0.6 * torch.rand(n, 2, generator=g)) * size  # (n, 2) width, height
    x0 = torch.rand(n, generator=g) * (size - side[:, 0])
    y0 = torch.rand(n, generator=g) * (size - side[:, 1])
    inverted = torch.rand(n, generator=g) < 0.5
    inside = box_masks(torch.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], dim=1), (size, size))
    return (inside ^ inverted[:, None, None]).float()[:, None]


def pixel_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` i.i.d. per-pixel masks, (n, 1, size, size): uniform noise values, or (half of them)
    0/1 pixels kept with a random probability."""
    g = generator
    noise = torch.rand(n, 1, size, size, generator=g)
    keep = torch.rand(n, 1, 1, 1, generator=g)
    binary = torch.rand(n, generator=g) < 0.5
    return torch.where(binary[:, None, None, None], (noise < keep).float(), noise)


def object_masks(boxes: Tensor, size: int, generator: torch.Generator, margin: float = 6.0) -> Tensor:
    """0/1 masks (n, 1, size, size) from ``boxes`` (n, M, 4) xyxy px (all-zero rows: no object): the
    box of one object (drawn uniformly among each image's objects) widened by ``U(0, margin)`` px
    per side, kept with the rest removed, or (half of them) removed with the rest kept. An image
    without objects gets a random rectangle (:func:`rectangle_masks`)."""
    g = generator
    n = boxes.shape[0]
    present = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])  # (n, M)
    weights = present.float() + 1e-6 * (~present.any(1, keepdim=True)).float()  # uniform if none
    slot = torch.multinomial(weights.clamp(min=1e-12), 1, generator=g)[:, 0]
    box = boxes[torch.arange(n), slot]  # (n, 4)
    pad = margin * torch.rand(n, 1, generator=g)
    box = box + torch.cat([-pad, -pad, pad, pad], dim=1)
    inverted = torch.rand(n, generator=g) < 0.5
    fallback = rectangle_masks(n, size, g)
    inside = box_masks(box, (size, size)) ^ inverted[:, None, None]
    has = present.any(1)[:, None, None, None]
    return torch.where(has, inside.float()[:, None], fallback)


def random_masks(n: int, size: int, generator: torch.Generator, boxes: Tensor | None = None) -> Tensor:
    """``n`` masks (n, 1, size, size), each of a kind drawn uniformly from :data:`MASK_KINDS`
    (``"object"`` needs the objects' ``boxes`` (n, M, 4); without them it is not drawn). Every
    kind is drawn for every image (the random stream does not depend on which kind is picked)."""
    g = generator
    makers = [constant_masks, rectangle_masks, pixel_masks]
    kind = torch.randint(len(MASK_KINDS) if boxes is not None else len(MASK_KINDS) - 1, (n,), generator=g)
    out = smooth_masks(n, size, g)
    for k, make in enumerate(makers, start=1):
        out = torch.where((kind == k)[:, None, None, None], make(n, size, g), out)
    if boxes is not None:
        out = torch.where((kind == 4)[:, None, None, None], object_masks(boxes, size, g), out)
    return out


def box_evidence(mask: Tensor, boxes: Tensor) -> Tensor:
    """Mean of ``mask`` (B, 1, H, W) over each box ``boxes`` (B, M, 4) xyxy px -> (B, M) in [0, 1]
    (1 for an empty box)."""
    in_y, in_x = box_spans(boxes, mask.shape[-2:])  # (B, M, H), (B, M, W)
    area = (in_y.sum(-1) * in_x.sum(-1)).to(mask.dtype)  # (B, M)
    total = torch.einsum("bmh,bhw,bmw->bm", in_y.to(mask.dtype), mask[:, 0], in_x.to(mask.dtype))
    return torch.where(area > 0, total / area.clamp(min=1), torch.ones_like(total))


def jitter(x: Tensor, generator: torch.Generator, brightness: float = 0.1, contrast: float = 0.3) -> Tensor:
    """Per-image contrast (around the image's mean) then brightness factors in ``1 +- amount``."""
    g = generator
    n = x.shape[0]
    c = 1 + contrast * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    b = 1 + brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((mean + c * (x - mean)) * b).clamp(0, 1)


def augment(x: Tensor, generator: torch.Generator, mask_share: float = 0.5,
            boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The training augmentation: pixels (B, 3, H, W) in [0, 1] and the objects' boxes (B, M, 4)
    -> (augmented pixels (B, 3, H, W), evidence (B, M)). ``mask_share`` of the images (chosen at
    random) are multiplied by a :func:`random_masks` mask; the evidence of an object is the mean
    of its image's mask over its box (:func:`box_evidence`; 1 where unmasked)."""
    g = generator
    n, _, h, w = x.shape
    boxes = torch.zeros(n, 0, 4) if boxes is None else boxes
    masked = torch.rand(n, generator=g) < mask_share
    m = random_masks(n, h, g, boxes)  # drawn for every image: the stream does not depend on the coin flips
    m = torch.where(masked[:, None, None, None], m, torch.ones_like(m))
    evidence = box_evidence(m, boxes)
    x = x * m
    k = int(torch.randint(4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    return jitter(x, g), evidence


def label_augment(x: Tensor, generator: torch.Generator, mask_share: float = 0.0) -> Tensor:
    """The label recipe's augmentation, which never sees a box: pixels (B, 3, H, W) in [0, 1] ->
    augmented pixels. ``mask_share`` of the images (chosen at random) are multiplied by a mask of a
    kind that does not depend on where the objects are (:func:`random_masks` without boxes: smooth,
    constant, rectangle, pixels); the target stays the label whatever the mask removed. Then the
    rotation by a multiple of 90 degrees and :func:`jitter`. With ``mask_share == 0`` no mask is drawn."""
    g = generator
    n, _, h, _ = x.shape
    if mask_share > 0:
        masked = torch.rand(n, generator=g) < mask_share
        m = random_masks(n, h, g, None)  # no boxes: the "object" kind is never drawn
        x = x * torch.where(masked[:, None, None, None], m, torch.ones_like(m))
    k = int(torch.randint(4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    return jitter(x, g)


def evidence_targets(labels: Tensor, box_labels: Tensor, evidence: Tensor, num_classes: int,
                     multilabel: bool) -> Tensor:
    """Soft training targets that follow the evidence left by the mask.

    Single-label (``labels`` (B,) long; the object is slot 0 of ``box_labels``): the class
    distribution ``e * onehot(label) + (1 - e) / C`` with ``e`` the object's evidence.
    Multi-label (``labels`` (B, C) multi-hot): per class, the largest evidence of its objects
    (0 for an absent class). Label smoothing is applied on top by the loss.
    """
    if multilabel:
        out = torch.zeros(labels.shape[0], num_classes, dtype=evidence.dtype)
        valid = box_labels >= 0
        out.scatter_reduce_(1, box_labels.clamp(min=0), torch.where(valid, evidence, 0.0), reduce="amax")
        return out
    e = evidence[:, 0:1]
    return e * F.one_hot(labels, num_classes).to(evidence.dtype) + (1 - e) / num_classes
