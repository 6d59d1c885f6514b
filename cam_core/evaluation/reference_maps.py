r"""Sanity reference maps: the metrics of a map known to be right, or known to know nothing.

These are not CAMs (no model, no layer, no coefficients): each is a saliency map ``(N, H, W)`` in
``[0, 1]`` that the evaluation runner scores with the same metrics as the CAM methods, selectable
by name in ``cc.evaluate(..., methods=[*cc.PAPER_METHODS, *cc.SANITY_MAPS])``:

- ``"Box"``: the ground-truth box(es) of the explained class as a 0/1 map (their union). What a
  perfect localiser would give; on a sound benchmark it must beat ``Uniform`` and ``Random`` on
  every faithfulness and localization metric (:mod:`cam_core.evaluation.sanity` checks that). Undefined,
  hence NaN in every metric, for an image without a box of the explained class.
- ``"Uniform"``: a constant map (``value``, default 0.5): knows nothing and says so. Its
  insertion/deletion curves remove pixels in the seeded tie-breaking order of
  :func:`cam_core.metrics.pixel_ranks`, i.e. at random.
- ``"Random"``: i.i.d. uniform noise, seeded per image (``seed`` and the image's dataset index), so
  the same image gets the same map in any batch.
- ``"Center"``: a centred isotropic Gaussian, ``exp(-d^2 / (2 sigma^2))`` with ``sigma = width *
  min(H, W)`` (default 0.25): the "objects are in the middle" prior.

Direct use: ``cc.reference_maps.get("Center")(x, target)`` -> (N, H, W).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cam_core.metrics.localization import boxes_mask
from cam_core.names import name_key

#: the sanity maps by name, in the order the tables show them
SANITY_MAPS: list[str] = ["Box", "Uniform", "Random", "Center"]


class ReferenceMap:
    """A saliency map that needs no model: ``map(x, target, boxes=..., index=...) -> (N, H, W)``."""

    name: str = ""
    #: whether the map needs each image's boxes of the explained class
    needs_boxes: bool = False

    def __call__(self, x: Tensor, target: Tensor, *, boxes: Sequence[Tensor] | None = None,
                 index: Sequence[int] | Tensor | None = None) -> Tensor:
        """``x`` (N, C, H, W), ``target`` (N,); ``boxes``: N tensors (M_i, 4) of the explained class's
        boxes (``Box`` only); ``index``: N dataset positions (``Random`` seeds each image by it;
        default 0..N-1). Returns (N, H, W) in [0, 1], on ``x``'s device and dtype."""
        if x.dim() != 4:
            raise ValueError(f"x must be (N, C, H, W); got shape {tuple(x.shape)}")
        if self.needs_boxes and boxes is None:
            raise ValueError(f"the {self.name!r} map needs boxes=[(M_i, 4) boxes of the explained class, "
                             "one tensor per image]")
        n, _, h, w = x.shape
        idx = list(range(n)) if index is None else [int(i) for i in torch.as_tensor(index).reshape(-1)]
        if len(idx) != n or (boxes is not None and len(boxes) != n):
            raise ValueError(f"need one index and one box tensor per image ({n}); got {len(idx)} indices and "
                             f"{None if boxes is None else len(boxes)} box tensors")
        return self.saliency(x, (h, w), boxes, idx).to(device=x.device, dtype=x.dtype)

    def saliency(self, x: Tensor, size: tuple[int, int], boxes: Sequence[Tensor] | None,
                 index: list[int]) -> Tensor:  # (N, H, W)
        raise NotImplementedError


class Box(ReferenceMap):
    """The union of the explained class's ground-truth boxes, 1 inside, 0 outside."""

    name = "Box"
    needs_boxes = True

    def saliency(self, x, size, boxes, index):
        return torch.stack([boxes_mask(torch.as_tensor(b).cpu(), size) for b in boxes]).float()


@dataclass
class Uniform(ReferenceMap):
    """A constant map of ``value``."""

    value: float = 0.5
    name = "Uniform"

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 1:
            raise ValueError(f"value must lie in [0, 1] (a saliency), got {self.value}")

    def saliency(self, x, size, boxes, index):
        return torch.full((len(index), *size), float(self.value))


@dataclass
class Random(ReferenceMap):
    """I.i.d. U(0, 1) noise, image ``i``'s from a generator seeded with ``(seed, i)``."""

    seed: int = 0
    name = "Random"

    def saliency(self, x, size, boxes, index):
        maps = []
        for i in index:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(i))
            maps.append(torch.rand(size, generator=g))
        return torch.stack(maps)


@dataclass
class Center(ReferenceMap):
    """A centred Gaussian of standard deviation ``width * min(H, W)``, peak 1."""

    width: float = 0.25
    name = "Center"

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be > 0 (a fraction of the image size), got {self.width}")

    def saliency(self, x, size, boxes, index):
        h, w = size
        sigma = self.width * min(h, w)
        ys = torch.arange(h, dtype=torch.float32) + 0.5 - h / 2
        xs = torch.arange(w, dtype=torch.float32) + 0.5 - w / 2
        g = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))  # (H, W)
        return g.expand(len(index), h, w).clone()


#: every reference map by name
REFERENCE_MAPS: dict[str, type[ReferenceMap]] = {m.name: m for m in (Box, Uniform, Random, Center)}


def lookup(name: str) -> type[ReferenceMap] | None:
    """The reference map class called ``name`` (case-insensitive), or None when there is none."""
    if not isinstance(name, str):
        return None
    return {name_key(k): v for k, v in REFERENCE_MAPS.items()}.get(name_key(name))


def get(name: str, **kwargs) -> ReferenceMap:
    """Build the reference map ``name`` ("Box", "Uniform", "Random", "Center"); kwargs go to its class."""
    cls = lookup(name)
    if cls is None:
        raise ValueError(f"unknown reference map {name!r}; valid names: {', '.join(REFERENCE_MAPS)}")
    return cls(**kwargs)


def for_benchmark(bench: object) -> list[str]:
    """The sanity maps a benchmark can evaluate: all of :data:`SANITY_MAPS`, less ``Box`` without boxes."""
    has_boxes = getattr(bench, "has_boxes", True)
    return [n for n in SANITY_MAPS if has_boxes or not REFERENCE_MAPS[n].needs_boxes]


def check_benchmark(bench: object, names: Sequence[str]) -> None:
    """Raise a clear error when a map that needs boxes is asked of a benchmark without any."""
    need = [n for n in names if (cls := lookup(n)) is not None and cls.needs_boxes]
    if need and not getattr(bench, "has_boxes", True):
        raise ValueError(f"{', '.join(map(repr, need))} needs ground-truth boxes, and benchmark "
                         f"{getattr(bench, 'name', bench)!r} has none; drop it from methods (keep 'Uniform', "
                         "'Random', 'Center') or use a benchmark with boxes")
