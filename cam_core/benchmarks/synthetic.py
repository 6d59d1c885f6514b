"""The embedded default benchmark: generated shapes with two small trained CNNs each.

    bench = cc.benchmarks.load("shapes-single", arch="vgg")   # loads the committed model (seed 0)
    bench = cc.benchmarks.load("shapes-single", arch="vgg", model_seed=1)   # another training run
    bench = cc.benchmarks.load("shapes-clutter", arch="vgg", recipe="evidence")   # v4's model (ablation)
    for batch in bench.images(n=1000, seed=0): ...

``model_seed`` picks one of the independently trained models (:data:`training.MODEL_SEEDS`: 0, 1, 2
for the VGG-style models); ``recipe`` the training recipe (``"label"``: no box in the target, every
model's default; ``"evidence"``: benchmark v4's box-evidence target, the ablation; None:
:func:`training.default_recipe`).

The pieces, bottom up (each imports only those above it):

- :mod:`~cam_core.benchmarks.shapes`: the rasteriser (classes, decoys, backgrounds, strokes);
- :mod:`~cam_core.benchmarks.generator`: what each variant draws, from a seed (version, specs,
  normalisation);
- :mod:`~cam_core.benchmarks.store`: the data folder and the cache of generated splits;
- :mod:`~cam_core.benchmarks.nets` and :mod:`~cam_core.benchmarks.checkpoints`: the architectures
  and their versioned checkpoints (an old one is refused with the command that retrains it);
- :mod:`~cam_core.benchmarks.scores`, :mod:`~cam_core.benchmarks.card`: held-out scores and
  calibration, the dataset card;
- :mod:`~cam_core.benchmarks.augment`, :mod:`~cam_core.benchmarks.training`: how the models are
  trained (``python -m cam_core train --all``);
- this module: the :class:`ShapesBenchmark` and its registration (it trains a missing model
  when asked to).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cam_core.benchmarks import card, checkpoints, nets, store, training
from cam_core.benchmarks.base import Benchmark, Sample, register
from cam_core.benchmarks.generator import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MEAN,
    STD,
    VARIANTS,
    ShapesData,
    normalize,
    spec,
)

log = logging.getLogger(__name__)


def preprocess(image: Any) -> Tensor:
    """PIL image, uint8 (C, H, W) tensor, or float (C, H, W) pixels in [0, 1] -> the models' input:
    float (3, 64, 64), normalised with :data:`generator.MEAN` / :data:`generator.STD`."""
    import torch.nn.functional as F

    if not isinstance(image, Tensor):
        import numpy as np

        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x[None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[0]
    return normalize(x)


def load_model(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu",
               train_if_missing: bool = True, model_seed: int = 0, recipe: str | None = None) -> nn.Module:
    """The trained classifier (eval mode, on ``device``); trained now if its checkpoint is missing
    and ``train_if_missing``. A checkpoint of an older version is an error that says how to retrain.
    ``recipe`` None: :func:`training.default_recipe`."""
    recipe = training.default_recipe(variant, arch) if recipe is None else recipe
    path = checkpoints.checkpoint_path(data_dir, variant, arch, model_seed, recipe)
    if not path.exists() and train_if_missing and arch in nets.ARCHS:
        log.warning("no checkpoint at %s: training %s now (minutes on a CPU)", path, path.stem)
        init = training.configs(recipe)[(variant, arch)].init
        if init and not checkpoints.checkpoint_path(data_dir, *init.rsplit("-", 1), model_seed, recipe).exists():
            training.train_and_save(*init.rsplit("-", 1), data_dir=data_dir, seed=model_seed, recipe=recipe)
        training.train_and_save(variant, arch, data_dir=data_dir, seed=model_seed, recipe=recipe)
    return checkpoints.load_model(variant, arch, data_dir, device, model_seed, recipe)


def shipped_seeds(variant: str, arch: str, recipe: str | None = None) -> tuple[int, ...]:
    """The model seeds the repository ships for ``variant``'s ``arch`` models of ``recipe`` (None: the
    default recipe): :data:`training.MODEL_SEEDS` (0, 1, 2 for the VGG-style label models), else ``(0,)``."""
    recipe = training.default_recipe(variant, arch) if recipe is None else recipe
    return training.MODEL_SEEDS.get((arch, recipe), (0,))


class ShapesBenchmark(Benchmark):
    """One variant of the embedded benchmark with one of its two trained models."""

    def __init__(self, variant: str, arch: str, model: nn.Module, data: ShapesData, device: torch.device,
                 data_dir: Path, seed: int = 0, model_seed: int = 0, recipe: str = "label"):
        sp = spec(variant)
        self.name, self.arch, self.spec, self.seed = variant, arch, sp, seed
        self.model_seed, self.recipe = model_seed, recipe
        #: which trained model this is (the evaluation cache key holds it: each seed has its own results)
        self.model_id = f"{checkpoints.model_key(variant, arch, model_seed, recipe)}:{nets.state_dict_sha256(model)[:16]}"
        self.model, self.target_layer, self.device = model, nets.target_layer(arch), device
        self.preprocess: Callable[[Any], Tensor] = preprocess
        self.class_names = list(CLASS_NAMES)
        self.multilabel = sp.multilabel
        self.mean, self.std = torch.tensor(MEAN), torch.tensor(STD)
        self.data, self.data_dir = data, data_dir

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, i: int) -> Sample:
        return self.data.sample(i)

    def card(self) -> str:
        return card.dataset_card(checkpoints.read_manifest(self.data_dir))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", model_seed={self.model_seed}, recipe={self.recipe!r})"


def _load(variant: str, data_dir: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu",
          arch: str = "vgg", train_if_missing: bool = True, seed: int = 0, n_test: int | None = None,
          model_seed: int = 0, recipe: str | None = None, **kwargs: Any) -> ShapesBenchmark:
    if kwargs:
        raise ValueError(f"unexpected arguments for {variant}: {', '.join(kwargs)}; "
                         "accepted: data_dir, device, arch, train_if_missing, seed, n_test, model_seed, recipe")
    if arch not in nets.ARCHS + nets.TRANSFORMER_ARCHS:
        valid = ", ".join(nets.ARCHS + nets.TRANSFORMER_ARCHS)
        raise ValueError(f"unknown arch {arch!r}; choose one of {valid}")
    recipe = training.default_recipe(variant, arch) if recipe is None else recipe
    checkpoints.model_key(variant, arch, model_seed, recipe)  # a clear error for a bad seed or recipe
    if (variant, arch) not in training.configs(recipe):
        raise ValueError(f"the {recipe!r} recipe has no {variant}/{arch} model; it has: "
                         + ", ".join(f"{v}/{a}" for v, a in training.configs(recipe)))
    root = store.resolve_data_dir(data_dir)
    device = torch.device(device)
    model = load_model(variant, arch, root, device, train_if_missing, model_seed, recipe)
    data = store.dataset(variant, "test", seed=seed, n=n_test, data_dir=root)
    return ShapesBenchmark(variant, arch, model, data, device, root, seed, model_seed, recipe)


def load_single(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
                train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-single``: one object and 1-2 decoys per image, single-label (the ImageNet column)."""
    return _load("shapes-single", data_dir, device, arch, train_if_missing, **kwargs)


def load_multi(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
               train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-multi``: 2-3 objects and 1-2 decoys per image, multi-label (the VOC 2007 column)."""
    return _load("shapes-multi", data_dir, device, arch, train_if_missing, **kwargs)


def load_clutter(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
                 train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-clutter``: 3-5 objects, 2-3 decoys and heavy clutter, multi-label (the COCO 2014 column)."""
    return _load("shapes-clutter", data_dir, device, arch, train_if_missing, **kwargs)


for _name, _fn in (("shapes-single", "load_single"), ("shapes-multi", "load_multi"),
                   ("shapes-clutter", "load_clutter")):
    register(_name, f"cam_core.benchmarks.synthetic:{_fn}", VARIANTS[_name].description)
