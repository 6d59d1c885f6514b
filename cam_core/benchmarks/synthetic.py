"""The embedded default benchmark: procedurally generated shapes, made here from a seed.

Three variants mirror the paper's three columns (Tables 3-5):

============== ======================================== ================ ==========
name           what an image holds                      labels           mirrors
============== ======================================== ================ ==========
shapes-single  one object, light clutter                single (top-1)   ImageNet
shapes-multi   2-4 objects, medium clutter              multi-label      VOC 2007
shapes-clutter 4-7 smaller objects, heavy clutter       multi-label      COCO 2014
============== ======================================== ================ ==========

An object's class can be told only by its shape: colour, texture, size, position, rotation and
the background are drawn independently of the class. Every object has its tight box. Images
are ``64 x 64`` RGB in ``[0, 1]`` (no normalisation: ``mean = std = None``).

Determinism: a split is generated in chunks of :data:`CHUNK` images, chunk ``c`` from its own
``torch.Generator`` seeded by a hash of ``(variant, split, seed, c, GENERATOR_VERSION)``; the
same arguments give identical tensors, the train and test splits come from disjoint seed
streams, and the first ``n`` images of a split do not depend on how many were asked for.
Generated tensors are cached under ``<data_dir>/generated/`` (uint8 images).

    bench = cc.benchmarks.load("shapes-single", arch="vgg")   # trains the model if missing
    for batch in bench.images(n=1000, seed=0): ...
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cam_core.benchmarks import nets, shapes
from cam_core.benchmarks.base import Benchmark, Sample, register

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the generator's output changes (invalidates caches and models)
IMAGE_SIZE = 64
CHUNK = 256
CLASS_NAMES: list[str] = list(shapes.CLASS_NAMES)


@dataclass(frozen=True)
class VariantSpec:
    """What one variant's generator draws."""

    name: str
    mirrors: str
    multilabel: bool
    objects: tuple[int, int]  # min, max objects per image (inclusive)
    grid: int  # objects sit in distinct cells of a grid x grid layout (1 = anywhere)
    size: tuple[float, float]  # object circumradius in pixels (uniform)
    distractors: tuple[int, int]  # min, max distractor strokes per image (inclusive)
    clutter: float  # background contrast, 0..1
    n_train: int
    n_test: int

    @property
    def description(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        lo, hi = self.objects
        objs = "one object" if hi == 1 else f"{lo}-{hi} objects"
        return (f"generated shapes, {objs} per image, {kind}, {IMAGE_SIZE} px "
                f"(the paper's {self.mirrors} column); models: vgg, resnet")


VARIANTS: dict[str, VariantSpec] = {
    "shapes-single": VariantSpec("shapes-single", "ImageNet", False, (1, 1), 1, (11.0, 17.0), (2, 5), 0.4,
                                 n_train=12288, n_test=2048),
    "shapes-multi": VariantSpec("shapes-multi", "VOC 2007", True, (2, 4), 2, (8.0, 13.0), (3, 6), 0.65,
                                n_train=12288, n_test=2048),
    "shapes-clutter": VariantSpec("shapes-clutter", "COCO 2014", True, (4, 7), 3, (7.0, 10.0), (6, 12), 0.9,
                                  n_train=12288, n_test=2048),
}
SPLITS = ("train", "test")


# ---- where data lives -------------------------------------------------------------------------
def default_data_dir() -> Path:
    """``$CAM_CORE_DATA`` if set, else the repository's ``data/`` (next to the package), else
    ``~/.cache/cam_core`` (an installed, non-editable package)."""
    env = os.environ.get("CAM_CORE_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "data"
    return repo if repo.is_dir() else Path.home() / ".cache" / "cam_core"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data folder to use; a folder given explicitly must exist (a clear error if not)."""
    if data_dir is None:
        path = default_data_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"data_dir {str(path)!r} does not exist or is not a folder. Pass an existing folder (the "
            "embedded benchmark keeps its models in <data_dir>/models and its generated images in "
            "<data_dir>/generated), or data_dir=None for the default (the repository's data/ or "
            "$CAM_CORE_DATA)."
        )
    return path


def _spec(variant: str) -> VariantSpec:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def chunk_seed(variant: str, split: str, seed: int, chunk: int) -> int:
    """The generator seed of one chunk: a hash, so that splits and seeds never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = f"{variant}/{split}/{int(seed)}/{chunk}/v{GENERATOR_VERSION}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


# ---- the generator ----------------------------------------------------------------------------
@dataclass
class ShapesData:
    """A generated split: uint8 images and padded per-object annotations."""

    x: Tensor  # (N, 3, S, S) uint8
    labels: Tensor  # (N,) long, or (N, C) float multi-hot
    boxes: Tensor  # (N, M, 4) float xyxy, zero rows where box_labels == -1
    box_labels: Tensor  # (N, M) long, -1 = no object in that slot

    def __len__(self) -> int:
        return self.x.shape[0]

    def images(self) -> Tensor:
        """All images as float in [0, 1]: (N, 3, S, S)."""
        return self.x.float() / 255

    def sample(self, i: int) -> Sample:
        keep = self.box_labels[i] >= 0
        return Sample(x=self.x[i].float() / 255, label=self.labels[i], boxes=self.boxes[i][keep],
                      box_labels=self.box_labels[i][keep])

    def tensors(self) -> dict[str, Tensor]:
        return {"x": self.x, "labels": self.labels, "boxes": self.boxes, "box_labels": self.box_labels}


def _generate_chunk(spec: VariantSpec, n: int, g: torch.Generator) -> ShapesData:
    s, c = IMAGE_SIZE, len(CLASS_NAMES)
    image = shapes.random_background(n, s, s, generator=g, clutter=spec.clutter)  # (n, 3, S, S)
    n_dis = torch.randint(spec.distractors[0], spec.distractors[1] + 1, (n,), generator=g)
    for j in range(spec.distractors[1]):
        image = shapes.draw_distractor(image, g, present=j < n_dis)
    lo, hi = spec.objects
    n_obj = torch.randint(lo, hi + 1, (n,), generator=g)
    cell = s / spec.grid
    order = torch.rand(n, spec.grid**2, generator=g).argsort(dim=1)  # distinct cells per image
    boxes = torch.zeros(n, hi, 4)
    box_labels = torch.full((n, hi), -1, dtype=torch.long)
    for j in range(hi):
        present = j < n_obj
        cls = torch.randint(c, (n,), generator=g)
        size = spec.size[0] + (spec.size[1] - spec.size[0]) * torch.rand(n, generator=g)
        size = size.clamp(max=cell / 2 - 0.5)
        slot = order[:, j]
        origin = torch.stack([slot % spec.grid, slot // spec.grid], dim=1).float() * cell  # (n, 2)
        room = (cell / 2 - size - 0.5).clamp(min=0)[:, None]  # how far the centre may move
        centre = origin + cell / 2 + (2 * torch.rand(n, 2, generator=g) - 1) * room
        rotation = torch.rand(n, generator=g) * 2 * math.pi
        texture = torch.randint(len(shapes.TEXTURES), (n,), generator=g)
        image, _, box = shapes.draw_shape(image, cls, centre, size, rotation, texture=texture, generator=g,
                                          present=present)
        boxes[:, j] = box
        box_labels[:, j] = torch.where(present, cls, -1)
    x = (image * 255).round().to(torch.uint8)
    if spec.multilabel:
        labels = torch.zeros(n, c)
        for j in range(hi):
            valid = box_labels[:, j] >= 0
            labels[valid, box_labels[valid, j]] = 1.0
    else:
        labels = box_labels[:, 0].clone()
    return ShapesData(x, labels, boxes, box_labels)


def generate(variant: str, n: int, seed: int = 0, split: str = "test") -> ShapesData:
    """Generate the first ``n`` images of ``split`` of ``variant`` (no cache): deterministic in
    ``(variant, split, seed)``; a prefix of a larger ``n`` gives the same images."""
    spec = _spec(variant)
    parts = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small element-wise ops: one thread is fastest, and immune to contention
    try:
        for k in range(math.ceil(n / CHUNK)):
            g = torch.Generator().manual_seed(chunk_seed(variant, split, seed, k))
            parts.append(_generate_chunk(spec, CHUNK, g))
    finally:
        torch.set_num_threads(threads)
    data = ShapesData(*(torch.cat([getattr(p, f) for p in parts])[:n] for f in ("x", "labels", "boxes",
                                                                                 "box_labels")))
    return data


def dataset(variant: str, split: str = "test", seed: int = 0, n: int | None = None,
            data_dir: str | os.PathLike[str] | None = None, cache: bool = True) -> ShapesData:
    """A split of ``variant`` (default size from :data:`VARIANTS`), cached under
    ``<data_dir>/generated/<variant>-<split>-n<n>-seed<seed>-v<version>.pt``."""
    spec = _spec(variant)
    n = n if n is not None else (spec.n_train if split == "train" else spec.n_test)
    if not cache:
        return generate(variant, n, seed, split)
    folder = resolve_data_dir(data_dir) / "generated"
    path = folder / f"{variant}-{split}-n{n}-seed{seed}-v{GENERATOR_VERSION}.pt"
    if path.exists():
        try:
            return ShapesData(**torch.load(path, weights_only=True))
        except Exception as err:  # a corrupt cache file is regenerated, not trusted
            log.warning("ignoring unreadable cache %s (%s); regenerating", path, err)
    data = generate(variant, n, seed, split)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(data.tensors(), tmp)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return data


# ---- models ---------------------------------------------------------------------------------
def checkpoint_path(data_dir: Path, variant: str, arch: str) -> Path:
    return data_dir / "models" / f"{variant}-{arch}.pt"


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "models" / "manifest.json"
    if not path.exists():
        return {"models": {}}
    return json.loads(path.read_text())


def load_model(variant: str, arch: str, data_dir: Path, device: torch.device,
               train_if_missing: bool = True) -> nn.Module:
    """The trained classifier (eval mode, on ``device``); trained now if its checkpoint is missing."""
    if arch not in nets.ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(nets.ARCHS)}")
    path = checkpoint_path(data_dir, variant, arch)
    if not path.exists():
        if not train_if_missing:
            raise ValueError(
                f"no trained model at {path}. Train it with `python -m cam_core train --benchmark {variant} "
                f"--arch {arch}` (a few minutes on a CPU), or pass train_if_missing=True."
            )
        from cam_core.benchmarks.training import train_and_save

        log.warning("no checkpoint at %s: training %s/%s now (a few minutes on a CPU)", path, variant, arch)
        train_and_save(variant, arch, data_dir=data_dir)
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):  # the record holds torch.__version__
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    made_for = ckpt.get("record", {}).get("generator_version")
    if made_for != GENERATOR_VERSION:
        log.warning("%s was trained on generator version %s, this is version %s: retrain it with "
                    "`python -m cam_core train --benchmark %s --arch %s`", path, made_for, GENERATOR_VERSION,
                    variant, arch)
    model = nets.build(arch, len(CLASS_NAMES), IMAGE_SIZE)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device)


# ---- the benchmark ----------------------------------------------------------------------------
def preprocess(image: Any) -> Tensor:
    """PIL image, uint8 (C, H, W) tensor, or float (C, H, W) in [0, 1] -> float (3, 64, 64) in [0, 1]."""
    import torch.nn.functional as F

    if not isinstance(image, Tensor):
        import numpy as np

        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x[None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[0]
    return x


class ShapesBenchmark(Benchmark):
    """One variant of the embedded benchmark with one of its two trained models."""

    def __init__(self, variant: str, arch: str, model: nn.Module, data: ShapesData, device: torch.device,
                 data_dir: Path, seed: int = 0):
        spec = _spec(variant)
        self.name, self.arch, self.spec, self.seed = variant, arch, spec, seed
        self.model, self.target_layer, self.device = model, nets.target_layer(arch), device
        self.preprocess: Callable[[Any], Tensor] = preprocess
        self.class_names = list(CLASS_NAMES)
        self.multilabel = spec.multilabel
        self.mean = self.std = None
        self.data, self.data_dir = data, data_dir

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, i: int) -> Sample:
        return self.data.sample(i)

    def card(self) -> str:
        return dataset_card(read_manifest(self.data_dir))


def _load(variant: str, data_dir: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu",
          arch: str = "vgg", train_if_missing: bool = True, seed: int = 0, n_test: int | None = None,
          **kwargs: Any) -> ShapesBenchmark:
    if kwargs:
        raise ValueError(f"unexpected arguments for {variant}: {', '.join(kwargs)}; "
                         "accepted: data_dir, device, arch, train_if_missing, seed, n_test")
    root = resolve_data_dir(data_dir)
    device = torch.device(device)
    model = load_model(variant, arch, root, device, train_if_missing)
    data = dataset(variant, "test", seed=seed, n=n_test, data_dir=root)
    return ShapesBenchmark(variant, arch, model, data, device, root, seed)


def load_single(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
                train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-single``: one object per image, single-label (the ImageNet column)."""
    return _load("shapes-single", data_dir, device, arch, train_if_missing, **kwargs)


def load_multi(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
               train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-multi``: 2-4 objects per image, multi-label (the VOC 2007 column)."""
    return _load("shapes-multi", data_dir, device, arch, train_if_missing, **kwargs)


def load_clutter(data_dir: str | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
                 train_if_missing: bool = True, **kwargs: Any) -> ShapesBenchmark:
    """``shapes-clutter``: 4-7 objects and heavy clutter, multi-label (the COCO 2014 column)."""
    return _load("shapes-clutter", data_dir, device, arch, train_if_missing, **kwargs)


for _name, _fn in (("shapes-single", "load_single"), ("shapes-multi", "load_multi"),
                   ("shapes-clutter", "load_clutter")):
    register(_name, f"cam_core.benchmarks.synthetic:{_fn}", VARIANTS[_name].description)


# ---- the dataset card --------------------------------------------------------------------------
def dataset_card(manifest: dict[str, Any], figure: str | None = "examples.png") -> str:
    """The markdown dataset card: what the generator draws, classes, sizes, splits, model scores."""
    lines = [
        "# The embedded benchmark: generated shapes",
        "",
        "Made by `cam_core.benchmarks.synthetic` from a seed (nothing downloaded). Each image is "
        f"{IMAGE_SIZE} x {IMAGE_SIZE} RGB in [0, 1] (no normalisation). An object is one of "
        f"{len(CLASS_NAMES)} shape classes; its colour (the farthest of 8 uniform draws from the colour "
        "underneath, so it stays visible), texture (solid, stripes, checker), size, position and "
        "rotation (uniform over 360 degrees) are drawn independently of the class, so only the shape tells "
        "the class. Backgrounds are smooth colour noise, stripes or colour blobs with pixel noise; "
        "distractors are thin open strokes (segments, arcs) that are not any class shape. Every object has "
        "its tight bounding box (x0, y0, x1, y1, exclusive ends).",
        "",
        f"Classes ({len(CLASS_NAMES)}): " + ", ".join(f"`{c}`" for c in CLASS_NAMES) + ".",
        "",
        "| variant | mirrors | labels | objects / image | object radius (px) | distractors | clutter "
        "| train | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in VARIANTS.values():
        lines.append(
            f"| `{spec.name}` | {spec.mirrors} | {'multi-label' if spec.multilabel else 'single-label'} "
            f"| {spec.objects[0]}-{spec.objects[1]} | {spec.size[0]:g}-{spec.size[1]:g} "
            f"| {spec.distractors[0]}-{spec.distractors[1]} | {spec.clutter:g} | {spec.n_train} "
            f"| {spec.n_test} |"
        )
    lines += [
        "",
        "Splits: train and test are generated from disjoint seed streams (a SHA-256 of variant, split, "
        f"seed, chunk and generator version {GENERATOR_VERSION}); `bench.images()` draws from the test "
        "split, which no model saw in training.",
        "",
        "## Models (held-out test split)",
        "",
        "`vgg`: conv-BN-ReLU blocks with max-pool, explained layer `features.17` (64 maps, 8 x 8), a last "
        "max-pool, then FC-ReLU-Dropout-FC-ReLU-FC (non-linear head, as VGG16). `resnet`: residual blocks, "
        "explained layer `layer3` (64 maps, 8 x 8), global average pool and one Linear layer (linear head).",
        "",
        "| model | metric | held-out score | params | train time (s) | threads | seed | torch "
        "| sha256 (state) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rec in sorted(manifest.get("models", {}).items()):
        lines.append(
            f"| `{key}` | {rec.get('metric', '')} | {rec.get('score', float('nan')):.4f} "
            f"| {rec.get('params', '')} | {rec.get('train_seconds', float('nan')):.0f} "
            f"| {rec.get('threads', '')} | {rec.get('seed', '')} "
            f"| {rec.get('torch', '')} | `{str(rec.get('sha256', ''))[:16]}` |"
        )
    if not manifest.get("models"):
        lines.append("| (no model trained yet: `python -m cam_core train --all`) | | | | | | | | |")
    under = [k for k, r in sorted(manifest.get("models", {}).items()) if r.get("score", 1.0) < 0.9]
    if under:
        names = ", ".join(f"`{k}`" for k in under)
        lines += ["", f"Under the 0.9 bar (top-1 or mAP): {names}. Their schedule "
                  "(`CONFIGS` in `cam_core/benchmarks/training.py`) was sized to the CPU time available "
                  "when they were trained and they were still underfitting (training loss falling at the "
                  "last epoch); a longer schedule is the next thing to try. Results on these models are "
                  "reported, but read them with that in mind."]
    lines += ["", "Metric: top-1 accuracy (single-label) or mAP over classes (multi-label), on the full "
              "test split. Train time: wall-clock seconds on the machine and threads shown (a shared, "
              "busy CPU makes it longer)."]
    if figure:
        lines += ["", f"![Examples: test images with their boxes]({figure})", "",
                  f"Figure: `{figure}` (next to this card), test images of each variant with their boxes."]
    return "\n".join(lines) + "\n"
