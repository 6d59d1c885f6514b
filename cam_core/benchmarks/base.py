"""The benchmark interface and its registry.

A benchmark bundles a trained model, the layer whose maps are explained, the model's
preprocessing, the class names, and a dataset of images with labels and boxes::

    bench = cc.benchmarks.load("shapes-single", device="auto")
    for batch in bench.images(n=1000, seed=0, batch_size=32):
        batch.x, batch.labels, batch.boxes

Conventions (shared by every benchmark):
- ``batch.x``: (B, C, H, W) float, already preprocessed (the model's input space), on ``bench.device``.
- ``batch.labels``: (B,) long for single-label benchmarks; (B, num_classes) float multi-hot
  when ``bench.multilabel``.
- ``batch.boxes[i]``: (M_i, 4) float ``x0, y0, x1, y1`` in pixels of ``batch.x`` (after any
  resize/crop; x1, y1 exclusive), ``batch.box_labels[i]``: (M_i,) long class of each box.
- ``batch.index``: (B,) position of each image in the dataset: a stable id for caches.
- ``bench.images(n, seed)`` draws the same ``n`` images for the same ``seed`` (a seeded random
  subset, as the paper's "1,000 randomly selected images"), in a fixed order.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Sample:
    """One image of a dataset, before batching (CPU tensors)."""

    x: Tensor  # (C, H, W) preprocessed
    label: Tensor  # () long, or (num_classes,) multi-hot float
    boxes: Tensor  # (M, 4) float xyxy in pixels of x
    box_labels: Tensor  # (M,) long
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    x: Tensor  # (B, C, H, W)
    labels: Tensor  # (B,) long or (B, num_classes) multi-hot
    boxes: list[Tensor]  # B x (M_i, 4)
    box_labels: list[Tensor]  # B x (M_i,)
    index: Tensor  # (B,) dataset positions
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    def boxes_for(self, i: int, cls: int) -> Tensor:
        """Boxes of image ``i`` whose class is ``cls``: (M, 4)."""
        return self.boxes[i][self.box_labels[i] == cls]

    def to(self, device: torch.device | str) -> Batch:
        extra = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.extra.items()}
        return Batch(self.x.to(device), self.labels.to(device), [b.to(device) for b in self.boxes],
                     [b.to(device) for b in self.box_labels], self.index.to(device), extra)


def collate(samples: Sequence[Sample], index: Sequence[int]) -> Batch:
    """Stack samples into a :class:`Batch`; tensor-valued extras are stacked too."""
    extra: dict[str, Any] = {}
    for key in samples[0].extra:
        vals = [s.extra[key] for s in samples]
        extra[key] = torch.stack(vals) if isinstance(vals[0], Tensor) else vals
    return Batch(
        x=torch.stack([s.x for s in samples]),
        labels=torch.stack([s.label for s in samples]),
        boxes=[s.boxes for s in samples],
        box_labels=[s.box_labels for s in samples],
        index=torch.as_tensor(list(index), dtype=torch.long),
        extra=extra,
    )


class Benchmark:
    """A model + layer + dataset. Subclasses set the attributes and implement ``__len__``/``sample``.

    Attributes:
        name: registry name.
        model: the classifier, in eval mode, on ``device``.
        target_layer: dotted name of the layer whose maps are explained.
        preprocess: callable mapping a PIL image (or uint8 (C,H,W) tensor) to the model's input.
        class_names: list of class names, index = class id.
        multilabel: whether labels are multi-hot.
        mean, std: per-channel normalisation of the input (None when the input is not normalised);
            metrics use them to express "a removed pixel" in the model's input space.
        arch: which architecture the model is ("vgg" = non-linear head, "resnet" = linear head).
        has_boxes: whether images carry ground-truth boxes (localization metrics and the "Box" sanity map).
    """

    name: str = ""
    model: nn.Module
    target_layer: str
    preprocess: Callable[[Any], Tensor]
    class_names: list[str]
    multilabel: bool = False
    mean: Tensor | None = None
    std: Tensor | None = None
    arch: str = "vgg"
    has_boxes: bool = True
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, i: int) -> Sample:
        raise NotImplementedError

    def model_for(self, batch: Batch) -> nn.Module:
        """The classifier to explain for this batch: ``self.model`` here; a conditioned benchmark
        (VQA) returns its model with the batch's context (the questions) bound, so that every
        CAM method and metric sees an image -> logits model (tile layout, see methods.base)."""
        return self.model

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, n: int | None, seed: int = 0) -> list[int]:
        """The seeded random subset of ``n`` dataset positions (all of them, shuffled, if n is None)."""
        total = len(self)
        if n is None or n >= total:
            n = total
        g = torch.Generator().manual_seed(int(seed))
        return torch.randperm(total, generator=g)[:n].tolist()

    def images(self, n: int | None = 1000, seed: int = 0, batch_size: int = 32,
               indices: Sequence[int] | None = None) -> Iterator[Batch]:
        """Yield batches of the seeded subset (or of the given dataset ``indices``), on ``self.device``."""
        idx = list(indices) if indices is not None else self.subset(n, seed)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield collate([self.sample(i) for i in chunk], chunk).to(self.device)

    def activation_shape(self) -> tuple[int, int, int]:
        """``(K, h, w)``: the activation maps at ``target_layer`` for one image (one forward pass),
        e.g. K, the number of masked forward passes Score-CAM makes per image."""
        from cam_core.model.layers import resolve_layer
        from cam_core.runtime import eval_mode

        batch = next(iter(self.images(n=1, seed=0, batch_size=1)))
        model = self.model_for(batch) if hasattr(self, "model_for") else self.model
        _, layer = resolve_layer(model, self.target_layer)
        seen: list[tuple[int, ...]] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
        try:
            with torch.no_grad(), eval_mode(model):
                model(batch.x)
        finally:
            handle.remove()
        return seen[0][1], seen[0][2], seen[0][3]

    def card(self) -> str:
        """A markdown description of the benchmark (what it is, classes, sizes, model accuracy)."""
        return (f"# {self.name}\n\n{len(self)} images, {self.num_classes} classes, "
                f"model layer `{self.target_layer}`.\n")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, arch={self.arch!r}, images={len(self)}, "
                f"classes={self.num_classes}, device={self.device})")


# ---- registry ------------------------------------------------------------------------------
@dataclass
class _Entry:
    factory: str  # "module:function"
    description: str


_REGISTRY: dict[str, _Entry] = {}

# Modules that register benchmarks when imported.
_PROVIDERS = ("cam_core.benchmarks.synthetic", "cam_core.benchmarks.real", "cam_core.benchmarks.photos",
              "cam_core.vqa.benchmark")


def register(name: str, factory: str, description: str) -> None:
    """Register ``name`` -> ``"module:function"``; the function takes (data_dir, device, **kwargs)."""
    _REGISTRY[name] = _Entry(factory, description)


def _load_providers() -> None:
    for mod in _PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # a provider not written yet must not hide the others
            if err.name != mod:
                raise


def available() -> dict[str, str]:
    """Names of the registered benchmarks, with a one-line description each."""
    _load_providers()
    return {k: v.description for k, v in sorted(_REGISTRY.items())}


def load(name: str, data_dir: str | None = None, device: str | torch.device = "auto",
         **kwargs: Any) -> Benchmark:
    """Load a benchmark by name (see :func:`available`); ``kwargs`` go to its factory (e.g. ``arch``)."""
    from cam_core.runtime import resolve_device

    _load_providers()
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    mod, fn = _REGISTRY[name].factory.split(":")
    factory = getattr(importlib.import_module(mod), fn)
    return factory(data_dir=data_dir, device=resolve_device(device), **kwargs)


def load_seeds(name: str, model_seeds: Sequence[int] | str | None = (0, 1, 2), data_dir: str | None = None,
               device: str | torch.device = "auto", **kwargs: Any) -> list[Benchmark]:
    """:func:`load` once per trained model: ``[load(name, model_seed=k, ...) for k in model_seeds]``
    (``model_seeds`` a sequence or a comma-separated string such as ``"0,1,2"``), for
    :func:`cam_core.evaluation.evaluate_seeds`. ``model_seeds=None``: the seeds the repository ships for
    this architecture and recipe (``arch`` and ``recipe`` in ``kwargs``; 0, 1, 2 for the VGG-style
    label-recipe models, 0 for the others), so nothing is trained. A benchmark with one published model
    (the real ones) takes ``model_seeds=(0,)`` only."""
    if model_seeds is None:
        model_seeds = _shipped_seeds(name, kwargs.get("arch", "vgg"), kwargs.get("recipe"))
    seeds = [int(k) for k in (model_seeds.split(",") if isinstance(model_seeds, str) else model_seeds)]
    if not seeds:
        raise ValueError("model_seeds is empty: pass e.g. (0, 1, 2) or '0,1,2'")
    _load_providers()
    if name in _REGISTRY and not _REGISTRY[name].factory.startswith("cam_core.benchmarks.synthetic:"):
        if seeds != [0]:
            raise ValueError(f"{name!r} has one trained model (its publisher's): use model_seeds=(0,)")
        return [load(name, data_dir=data_dir, device=device, **kwargs)]
    return [load(name, data_dir=data_dir, device=device, model_seed=k, **kwargs) for k in seeds]

def _shipped_seeds(name: str, arch: str, recipe: str | None) -> tuple[int, ...]:
    """The model seeds shipped for ``name``'s ``arch`` models of ``recipe`` (None: its default recipe), as
    its provider module says (``shipped_seeds(name, arch, recipe)``, e.g. the embedded benchmark's
    :func:`cam_core.benchmarks.synthetic.shipped_seeds`); ``(0,)`` for a provider with one model."""
    _load_providers()
    if name not in _REGISTRY:
        return (0,)
    provider = importlib.import_module(_REGISTRY[name].factory.split(":")[0])
    shipped = getattr(provider, "shipped_seeds", None)
    return tuple(shipped(name, arch, recipe)) if shipped is not None else (0,)
