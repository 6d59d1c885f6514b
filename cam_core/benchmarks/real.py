"""The paper's real setup behind the benchmark interface: ``imagenet``, ``voc2007``, ``coco2014``.

Registers the three names and holds what their loaders share: finding the data folder (argument,
then environment variable, then a clear error), checking paths up front, and turning an image
and its boxes into a :class:`~cam_core.benchmarks.base.Sample` with the model's preprocessing.
Nothing is downloaded: see each factory's docstring for the layout and where to get the data.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from cam_core.benchmarks.base import Batch, Benchmark, Sample, register
from cam_core.benchmarks.weights import TARGET_LAYERS, build_model, checkpoint_path, preprocess_for
from cam_core.model.layers import resolve_layer

register("imagenet", "cam_core.benchmarks.imagenet:imagenet",
         "ILSVRC2012 validation (50,000 images, 1000 classes, boxes); torchvision VGG16 / ResNet50")
register("voc2007", "cam_core.benchmarks.voc:voc2007",
         "PASCAL VOC 2007 test (4,952 images, 20 classes, multi-label, boxes); TorchRay's VGG16")
register("coco2014", "cam_core.benchmarks.coco:coco2014",
         "MS COCO 2014 val (40,137 labelled images, 80 classes, multi-label, boxes); TorchRay's VGG16")


#: where each real dataset is downloaded from (named in the errors)
DOWNLOAD_URLS: dict[str, str] = {
    "CAM_CORE_IMAGENET": "https://image-net.org/download-images",
    "CAM_CORE_VOC": "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/",
    "CAM_CORE_COCO": "https://cocodataset.org/#download",
}


def data_root(data_dir: str | os.PathLike | None, env: str, what: str) -> Path:
    """``data_dir``, else ``$env``; a clear error, naming where the folder came from (``data_dir=`` or
    ``$env``) and the download page, when neither is given or the folder is missing."""
    url = DOWNLOAD_URLS.get(env)
    get = f" Download it from {url}." if url else ""
    source = "data_dir"
    if data_dir is None:
        data_dir = os.environ.get(env) or None
        source = f"${env}"
        if data_dir is None:
            raise ValueError(f"no data folder for {what}: pass data_dir=... (the book's DATA_DIR parameter) "
                             f"or set the environment variable {env}.{get} The factory's docstring gives "
                             "the layout.")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"the data folder for {what}, {source}={str(data_dir)!r}, does not exist "
                                f"(or is not a folder): pass data_dir=... (the book's DATA_DIR parameter) "
                                f"or set {env} to the folder that holds it.{get}")
    return root


def require(path: Path, what: str, hint: str = "") -> Path:
    """``path`` if it exists, else ``FileNotFoundError`` naming it (and what it should hold)."""
    if not path.exists():
        more = f" {hint}" if hint else ""
        raise FileNotFoundError(f"expected {what} at {str(path)!r}, which does not exist.{more}")
    return path


class FolderBenchmark(Benchmark):
    """A dataset of image files with labels and boxes, and one of the paper's models.

    Subclasses implement ``__len__`` and ``annotation(i) -> (path, label, boxes, box_labels)``
    with boxes in pixels of the original image (xyxy, x1/y1 exclusive).
    """

    dataset: str = ""  # "imagenet" | "voc" | "coco": picks the checkpoint and preprocessing
    source: str = ""  # markdown: what the data is (for card())
    get_data: str = ""  # where to download it
    reported = ""  # the model's accuracy as its publisher reports it (not measured here)

    def _setup(self, root: Path, device: torch.device | str, arch: str, weights: Any, download: bool,
               model: nn.Module | None, target_layer: str | None,
               preprocess_kw: dict[str, Any] | None = None) -> None:
        if arch not in TARGET_LAYERS:
            raise ValueError(f"arch={arch!r} is not known; use 'vgg' (VGG16) or 'resnet' (ResNet50).")
        self.root, self.arch, self.device = root, arch, torch.device(device)
        if target_layer is not None and model is None:
            raise ValueError("target_layer= is for a model= of your own; the paper's models use "
                             f"{TARGET_LAYERS[arch]!r}")
        self.target_layer = target_layer or TARGET_LAYERS[arch]
        self.preprocess = preprocess_for(self.dataset, **(preprocess_kw or {}))
        self.mean, self.std = self.preprocess.mean, self.preprocess.std
        if model is None:
            self.weights_path: Path | None = checkpoint_path(arch, self.dataset, weights, download)
            model = build_model(arch, self.dataset, self.weights_path, device=self.device)
        else:  # the caller's own classifier (e.g. fine-tuned), used as given
            self.weights_path = None
            model = model.eval().to(self.device)
        resolve_layer(model, self.target_layer)  # a clear error listing the valid names
        self.model = model

    def annotation(self, i: int) -> tuple[Path, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def sample(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        path, label, boxes, box_labels = self.annotation(i)
        with Image.open(path) as im:
            img = im.convert("RGB")
        x = self.preprocess(img)  # (3, H, W)
        boxes, keep = self.preprocess.geometry(img.height, img.width).boxes(boxes)  # (M', 4)
        return Sample(x=x, label=label, boxes=boxes, box_labels=box_labels[keep], extra={"path": str(path)})

    def images(self, n: int | None = 1000, seed: int = 0, batch_size: int = 32,
               indices: Any = None) -> Iterator[Batch]:
        if isinstance(getattr(self.preprocess, "size", None), int) and batch_size != 1:
            raise ValueError("with size=<int> (shorter side, aspect kept) images differ in size and "
                             "cannot be stacked: use batch_size=1, or size=(224, 224).")
        return super().images(n=n, seed=seed, batch_size=batch_size, indices=indices)

    def card(self) -> str:
        if self.weights_path is not None:
            net = "VGG16" if self.arch == "vgg" else "ResNet50"
            model = f"{net}, checkpoint `{self.weights_path}`{self.reported}"
        else:
            model = f"`{type(self.model).__name__}` given by the caller"
        size = getattr(self.preprocess, "size", getattr(self.preprocess, "crop", ""))
        return (
            f"# {self.name}\n\n{self.source}\n\n"
            f"| | |\n|---|---|\n| data folder | `{self.root}` |\n| images | {len(self)} |\n"
            f"| classes | {self.num_classes} ({'multi-label' if self.multilabel else 'single-label'}) |\n"
            f"| model | {model} |\n| explained layer | `{self.target_layer}` |\n"
            f"| preprocessing | {type(self.preprocess).__name__} (size {size}) |\n"
            f"| input mean / std | {[round(v, 4) for v in self.mean.tolist()]} / "
            f"{[round(v, 4) for v in self.std.tolist()]} |\n\n"
            "Boxes are in pixels of the model input (after resize/crop, clipped; boxes cropped out "
            f"entirely are dropped).\n\nData: {self.get_data}\n"
        )
