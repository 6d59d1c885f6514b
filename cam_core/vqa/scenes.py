"""Seeded scenes for the embedded VQA benchmark: a few coloured shapes with their boxes.

Every scene is a pure function of ``(seed, index)``: the same pair always draws the same
objects and the same pixels, so a dataset is random-access and nothing is stored. Inside a
scene the objects have pairwise distinct colours and pairwise distinct shapes, so that
"the red object" and "the square" name exactly one object each.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.78, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.92, 0.88, 0.12),
    "magenta": (0.85, 0.15, 0.85),
    "cyan": (0.12, 0.85, 0.88),
}
IMAGE_SIZE = 64
RADIUS = (0.12, 0.17)  # object half-size as a share of the image side (8 to 11 px at 64 px)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # half the object's extent, pixels
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (x1, y1 exclusive), from the drawn mask


@dataclass(frozen=True)
class Scene:
    image: Tensor  # (3, S, S) float in [0, 1]
    objects: tuple[SceneObject, ...]


def shape_mask(shape: str, dx: Tensor, dy: Tensor, r: float) -> Tensor:
    """Boolean mask of ``shape`` of half-size ``r`` on pixel offsets ``dx, dy`` from its centre."""
    ax, ay = dx.abs(), dy.abs()
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (ax <= 0.82 * r) & (ay <= 0.82 * r)
    if shape == "diamond":
        return ax + ay <= 1.1 * r
    if shape == "triangle":  # apex up; the base is at dy = 0.8 r
        return (dy <= 0.8 * r) & (dy >= -r) & (ax <= 0.58 * (dy + r))
    if shape == "cross":
        return ((ax <= 0.33 * r) & (ay <= r)) | ((ay <= 0.33 * r) & (ax <= r))
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def _scene_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"shapes-vqa/{int(seed)}/{int(index)}")


def make_scene(
    seed: int, index: int, size: int = IMAGE_SIZE, min_objects: int = 3, max_objects: int = 4
) -> Scene:
    """Draw scene ``index`` of the dataset seeded ``seed``: (3, size, size) image and its objects."""
    if not 1 <= min_objects <= max_objects <= min(len(SHAPES), len(COLOURS)):
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {min(len(SHAPES), len(COLOURS))}, "
            f"got {min_objects}, {max_objects}"
        )
    rng = _scene_rng(seed, index)
    n = rng.randint(min_objects, max_objects)
    shapes = rng.sample(SHAPES, n)
    colours = rng.sample(list(COLOURS), n)
    # background: a dark random grey-ish tint with pixel noise
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    base = torch.tensor([rng.uniform(0.0, 0.3) for _ in range(3)]) * 0.6 + rng.uniform(0.0, 0.15)
    image = base[:, None, None] + 0.04 * torch.randn(3, size, size, generator=gen)  # (3, S, S)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    placed: list[tuple[float, float, float]] = []
    objects: list[SceneObject] = []
    for shape, colour in zip(shapes, colours, strict=True):
        for attempt in range(400):  # rejection sampling: objects do not touch; shrink if crowded
            r = rng.uniform(RADIUS[0], RADIUS[1]) * size * (1.0 - 0.3 * attempt / 400)
            cx = rng.uniform(r + 1, size - r - 1)
            cy = rng.uniform(r + 1, size - r - 1)
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:  # pragma: no cover - never happens for 4 objects at these sizes
            raise RuntimeError(f"could not place {n} objects in scene {index}")
        placed.append((cx, cy, r))
        mask = shape_mask(shape, xs + 0.5 - cx, ys + 0.5 - cy, r)  # (S, S)
        rgb = torch.tensor(COLOURS[colour]) + torch.tensor([rng.uniform(-0.08, 0.08) for _ in range(3)])
        image = torch.where(mask[None], rgb.clamp(0, 1)[:, None, None], image)
        rows = mask.any(dim=1).nonzero()[:, 0]
        cols = mask.any(dim=0).nonzero()[:, 0]
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        objects.append(SceneObject(shape, colour, cx, cy, r, box))
    return Scene(image=image.clamp(0, 1), objects=tuple(objects))
