"""A pure, vectorised (torch) rasteriser of shape classes, cluttered backgrounds and distractors.

Everything here is batched over images: one call draws one object (or one background, or one
distractor) into each of ``N`` images at once, so a dataset of thousands of images is a few
dozen tensor operations. Nothing here holds state; randomness comes only from the
``torch.Generator`` the caller passes. Images are float ``(N, 3, H, W)`` in ``[0, 1]``.

Geometry: pixel ``(row y, column x)`` has its centre at ``(x + 0.5, y + 0.5)``; an object is given
by its centre ``(cx, cy)`` in pixels, its ``size`` (circumradius in pixels: every class shape fits
in the disc of that radius, whatever the rotation), and its ``rotation`` in radians. Boxes are
``x0, y0, x1, y1`` in pixels with ``x1, y1`` exclusive, tight around the drawn mask.

Example (the VQA scenes use it the same way)::

    g = torch.Generator().manual_seed(0)
    canvas = random_background(8, 64, 64, generator=g)                         # (8, 3, 64, 64)
    cls = torch.full((8,), CLASS_NAMES.index("star"))
    canvas, mask, box = draw_shape(canvas, cls, centre=torch.full((8, 2), 32.0), size=torch.full((8,), 12.0),
                                   rotation=torch.zeros(8), colour=torch.rand(8, 3, generator=g))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring",
    "crescent", "heart", "arrow", "diamond", "T", "L",
)
# Decoys: filled shapes that are no class, drawn like objects (colour, texture, size) but never
# labelled. Each resembles a class (pentagon ~ circle, ellipse ~ diamond, semicircle ~ crescent),
# so they are confusable clutter: a model must tell them apart, a map may point at them.
DECOY_NAMES: tuple[str, ...] = ("pentagon", "ellipse", "semicircle")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker")
BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "blobs")


# ---- shape classes in unit coordinates ---------------------------------------------------------
def _regular_polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * i / n), radius * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)]


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        r = outer if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": _regular_polygon(3),
    "star": _star(),
    "arrow": [(-0.9, -0.2), (0.15, -0.2), (0.15, -0.55), (0.9, 0.0), (0.15, 0.55), (0.15, 0.2), (-0.9, 0.2)],
    "pentagon": _regular_polygon(5, 0.9),
}


def _inside_polygon(u: Tensor, v: Tensor, vertices: list[tuple[float, float]]) -> Tensor:
    """Even-odd rule: is each point ``(u, v)`` inside the polygon? Same shape as ``u``."""
    inside = torch.zeros_like(u, dtype=torch.bool)
    n = len(vertices)
    for i in range(n):
        ax, ay = vertices[i]
        bx, by = vertices[(i + 1) % n]
        if ay == by:
            continue
        crosses = (ay > v) != (by > v)
        x_at = ax + (v - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (u < x_at)
    return inside


def _unit_mask(name: str, u: Tensor, v: Tensor) -> Tensor:
    """The class ``name`` in object coordinates (``u`` right, ``v`` down, fits in the unit disc)."""
    au, av = u.abs(), v.abs()
    r2 = u * u + v * v
    if name == "circle":
        return r2 <= 0.85**2
    if name == "square":
        return torch.maximum(au, av) <= 0.68
    if name == "cross":
        return ((au <= 0.28) & (av <= 0.92)) | ((av <= 0.28) & (au <= 0.92))
    if name == "ring":
        return (r2 <= 0.92**2) & (r2 >= 0.5**2)
    if name == "crescent":
        return (r2 <= 0.9**2) & ((u - 0.42) ** 2 + v * v > 0.72**2)
    if name == "heart":  # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y up, scaled into the unit disc
        x, y = u * 1.2, -v * 1.2 + 0.12
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if name == "diamond":  # a rhombus (not a rotated square: rotation is random)
        return au / 0.95 + av / 0.5 <= 1
    if name == "T":
        return ((v >= -0.85) & (v <= -0.4) & (au <= 0.85)) | ((au <= 0.22) & (v >= -0.85) & (v <= 0.85))
    if name == "ellipse":
        return (u / 0.92) ** 2 + (v / 0.55) ** 2 <= 1
    if name == "semicircle":
        return (r2 <= 0.9**2) & (v <= 0.15)
    if name == "L":
        return (((u >= -0.7) & (u <= -0.25) & (av <= 0.85))
                | ((v >= 0.4) & (v <= 0.85) & (u >= -0.7) & (u <= 0.7)))
    if name in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[name])
    raise ValueError(f"unknown shape {name!r}; known: {', '.join(CLASS_NAMES + DECOY_NAMES)}")


# ---- coordinates -----------------------------------------------------------------------------------
def _grid(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    return ys[:, None].expand(height, width), xs[None, :].expand(height, width)  # (H, W) each


def _local(centre: Tensor, size: Tensor, rotation: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Object coordinates ``(u, v)`` of every pixel, (N, H, W) each: unit = ``size`` pixels."""
    gy, gx = _grid(height, width, centre.device)
    dx = (gx[None] - centre[:, 0, None, None]) / size[:, None, None]  # (N, H, W)
    dy = (gy[None] - centre[:, 1, None, None]) / size[:, None, None]
    c, s = torch.cos(rotation)[:, None, None], torch.sin(rotation)[:, None, None]
    return dx * c + dy * s, -dx * s + dy * c


def shape_mask(cls: Tensor, centre: Tensor, size: Tensor, rotation: Tensor,
               height: int, width: int, names: tuple[str, ...] = CLASS_NAMES) -> Tensor:
    """Masks of ``N`` objects: class ids (N,) into ``names`` (:data:`CLASS_NAMES`, or
    :data:`DECOY_NAMES` for decoys), centres (N, 2) ``(cx, cy)`` px, sizes (N,) px,
    rotations (N,) rad -> (N, H, W) bool. Vectorised per class present in ``cls``."""
    if cls.ndim != 1 or centre.shape != (cls.shape[0], 2):
        raise ValueError(f"expected cls (N,) and centre (N, 2), got {tuple(cls.shape)} and "
                         f"{tuple(centre.shape)}; pass one object per image")
    if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= len(names)):
        raise ValueError(f"class ids must be in [0, {len(names)}); got {cls.tolist()}")
    u, v = _local(centre.float(), size.float(), rotation.float(), height, width)  # (N, H, W)
    mask = torch.zeros(cls.shape[0], height, width, dtype=torch.bool, device=cls.device)
    for c in cls.unique().tolist():
        sel = cls == c
        mask[sel] = _unit_mask(names[c], u[sel], v[sel])
    return mask


def mask_box(mask: Tensor) -> Tensor:
    """Tight boxes ``x0, y0, x1, y1`` (x1, y1 exclusive) of (N, H, W) masks -> (N, 4) float.
    An empty mask gets ``(0, 0, 0, 0)``."""
    n, h, w = mask.shape
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (N, H), (N, W)
    iy = torch.arange(h, device=mask.device)
    ix = torch.arange(w, device=mask.device)
    y0 = torch.where(rows, iy, h).amin(dim=1)
    y1 = torch.where(rows, iy + 1, 0).amax(dim=1)
    x0 = torch.where(cols, ix, w).amin(dim=1)
    x1 = torch.where(cols, ix + 1, 0).amax(dim=1)
    box = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(mask.flatten(1).any(1)[:, None], box, torch.zeros_like(box))


# ---- colours and textures ------------------------------------------------------------------------
def contrasting_colour(reference: Tensor, generator: torch.Generator, candidates: int = 8) -> Tensor:
    """Random colours (N, 3), each the farthest of ``candidates`` uniform draws from ``reference`` (N, 3):
    random, yet visible against what lies underneath."""
    n = reference.shape[0]
    draws = torch.rand(n, candidates, 3, generator=generator).to(reference.device)
    far = (draws - reference[:, None]).norm(dim=2).argmax(dim=1)  # (N,)
    return draws[torch.arange(n, device=reference.device), far]


def _texture(kind: Tensor, u: Tensor, v: Tensor, generator: torch.Generator) -> Tensor:
    """(N, H, W) bool pattern in object coordinates: True = main colour, False = darker shade."""
    n = kind.shape[0]
    freq = (1.5 + 1.5 * torch.rand(n, generator=generator)).to(u.device)[:, None, None]
    stripes = torch.sin(math.pi * freq * u) > 0
    checker = (torch.sin(math.pi * freq * u) * torch.sin(math.pi * freq * v)) > 0
    k = kind[:, None, None]
    return torch.where(k == 1, stripes, torch.where(k == 2, checker, True))


def draw_shape(canvas: Tensor, cls: Tensor, centre: Tensor, size: Tensor, rotation: Tensor,
               colour: Tensor | None = None, texture: Tensor | None = None,
               generator: torch.Generator | None = None, present: Tensor | None = None,
               names: tuple[str, ...] = CLASS_NAMES) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one object into each image of ``canvas`` (N, 3, H, W); returns ``(image, mask, box)``.

    ``colour`` (N, 3) in [0, 1] (default: a random colour that contrasts with the canvas under
    the object); ``texture`` (N,) ids into :data:`TEXTURES` (default: solid); ``present`` (N,) bool
    skips images where it is False (their mask is empty and box zero); ``names`` says what the
    ids in ``cls`` index (:data:`DECOY_NAMES` draws decoys). The canvas is not modified.
    """
    n, _, h, w = canvas.shape
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    mask = shape_mask(cls, centre, size, rotation, h, w, names)  # (N, H, W)
    if present is not None:
        mask &= present.to(mask.device)[:, None, None]
    if colour is None:
        area = mask.sum(dim=(1, 2)).clamp(min=1)[:, None]
        under = (canvas * mask[:, None]).sum(dim=(2, 3)) / area  # (N, 3) mean colour under the object
        colour = contrasting_colour(under, g)
    if texture is None:
        texture = torch.zeros(n, dtype=torch.long)
    texture = texture.to(canvas.device)
    u, v = _local(centre.float(), size.float(), rotation.float(), h, w)
    pattern = _texture(texture, u, v, g)[:, None]  # (N, 1, H, W)
    fill = colour.to(canvas)[:, :, None, None]  # (N, 3, 1, 1)
    pixels = torch.where(pattern, fill, 0.7 * fill)  # (N, 3, H, W)
    image = torch.where(mask[:, None], pixels, canvas)
    return image, mask, mask_box(mask)


# ---- backgrounds and distractors -----------------------------------------------------------------
def _noise_background(n: int, height: int, width: int, g: torch.Generator) -> Tensor:
    """Smooth colour noise at a random scale (4, 8 or 16 cells across): (N, 3, H, W)."""
    cells = torch.tensor([4, 8, 16])[torch.randint(3, (n,), generator=g)]
    out = torch.empty(n, 3, height, width)
    for c in cells.unique().tolist():
        sel = cells == c
        low = torch.rand(int(sel.sum()), 3, c, c, generator=g)
        out[sel] = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return out


def _stripe_background(base: Tensor, height: int, width: int, g: torch.Generator) -> Tensor:
    """Stripes between ``base`` (N, 3, 1, 1) and a second random colour: (N, 3, H, W)."""
    n = base.shape[0]
    gy, gx = _grid(height, width, torch.device("cpu"))
    angle = torch.rand(n, generator=g) * math.pi
    period = 4 + 12 * torch.rand(n, generator=g)
    phase = torch.rand(n, generator=g) * 2 * math.pi
    proj = gx[None] * torch.cos(angle)[:, None, None] + gy[None] * torch.sin(angle)[:, None, None]
    wave = (torch.sin(2 * math.pi * proj / period[:, None, None] + phase[:, None, None]) > 0).float()[:, None]
    other = torch.rand(n, 3, 1, 1, generator=g)
    return wave * other + (1 - wave) * base


def _blob_background(base: Tensor, height: int, width: int, g: torch.Generator, blobs: int = 6) -> Tensor:
    """A few soft Gaussian discs of random colours over ``base`` (N, 3, 1, 1): (N, 3, H, W)."""
    n = base.shape[0]
    gy, gx = _grid(height, width, torch.device("cpu"))
    out = base.expand(n, 3, height, width).clone()
    for _ in range(blobs):
        c = torch.rand(n, 2, generator=g) * torch.tensor([width, height])
        s = (0.06 + 0.18 * torch.rand(n, generator=g)) * max(height, width)
        d2 = (gx[None] - c[:, 0, None, None]) ** 2 + (gy[None] - c[:, 1, None, None]) ** 2
        a = torch.exp(-d2 / (2 * s[:, None, None] ** 2))[:, None]  # (N, 1, H, W)
        out = out * (1 - a) + a * torch.rand(n, 3, 1, 1, generator=g)
    return out


def random_background(n: int, height: int, width: int, generator: torch.Generator, clutter: float = 0.5,
                      kind: Tensor | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Random backgrounds (N, 3, H, W): smooth colour noise, stripes, or colour blobs (``kind`` (N,)
    ids into :data:`BACKGROUNDS`, random by default), plus pixel noise. ``clutter`` in [0, 1]
    scales their contrast."""
    g = generator
    if kind is None:
        kind = torch.randint(len(BACKGROUNDS), (n,), generator=g)
    kind = kind.cpu()
    base = torch.rand(n, 3, 1, 1, generator=g)
    amp = clutter * (0.4 + 0.6 * torch.rand(n, 1, 1, 1, generator=g))
    pattern = torch.empty(n, 3, height, width)
    for k in range(len(BACKGROUNDS)):  # draw each kind only for the images that have it
        sel = kind == k
        m = int(sel.sum())
        if m == 0:
            continue
        if k == 0:
            pattern[sel] = _noise_background(m, height, width, g)
        elif k == 1:
            pattern[sel] = _stripe_background(base[sel], height, width, g)
        else:
            pattern[sel] = _blob_background(base[sel], height, width, g)
    image = base + amp * (pattern - base)
    image = image + 0.03 * clutter * torch.randn(n, 3, height, width, generator=g)
    return image.clamp(0, 1).to(device)


def draw_distractor(canvas: Tensor, generator: torch.Generator, present: Tensor | None = None,
                    length: tuple[float, float] = (6.0, 20.0),
                    width: tuple[float, float] = (0.8, 2.0)) -> Tensor:
    """Draw one thin stroke into each image of ``canvas`` (N, 3, H, W): a line segment or a circular
    arc, in a random colour. Strokes are thin and open, so they are not any class shape (the
    class shapes are filled regions; the ring is a closed band at least ~0.4 of its radius thick)."""
    n, _, h, w = canvas.shape
    g = generator
    gy, gx = _grid(h, w, torch.device("cpu"))
    start = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    ln = length[0] + (length[1] - length[0]) * torch.rand(n, generator=g)
    ang = torch.rand(n, generator=g) * 2 * math.pi
    half = (width[0] + (width[1] - width[0]) * torch.rand(n, generator=g)) / 2
    # segment: distance to the segment start + t * dir, t in [0, ln]
    px, py = gx[None] - start[:, 0, None, None], gy[None] - start[:, 1, None, None]
    dx, dy = torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]
    t = torch.minimum((px * dx + py * dy).clamp(min=0), ln[:, None, None])
    seg = (px - t * dx) ** 2 + (py - t * dy) ** 2 <= half[:, None, None] ** 2
    # arc: radius ~ ln / 2, spanning 60..200 degrees
    rad = (ln / 2).clamp(min=3)[:, None, None]
    r = (px**2 + py**2).sqrt()
    theta = torch.atan2(py, px)
    span = (math.pi / 3 + torch.rand(n, generator=g) * (200 - 60) / 180 * math.pi)[:, None, None]
    rel = torch.remainder(theta - ang[:, None, None], 2 * math.pi)
    arc = ((r - rad).abs() <= half[:, None, None]) & (rel <= span)
    is_arc = torch.rand(n, generator=g) < 0.4
    mask = torch.where(is_arc[:, None, None], arc, seg).to(canvas.device)  # (N, H, W)
    if present is not None:
        mask &= present.to(canvas.device)[:, None, None]
    colour = torch.rand(n, 3, 1, 1, generator=g).to(canvas)
    return torch.where(mask[:, None], colour, canvas)
