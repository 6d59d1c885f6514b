"""The paper's models, their checkpoints and their preprocessing (never downloaded unless asked).

- ImageNet: torchvision ``vgg16`` / ``resnet50`` with ``IMAGENET1K_V1`` weights; input resized to
  256 (shorter side), centre-cropped to 224, ImageNet mean/std (torchvision's own transform).
- PASCAL VOC 2007 / MS COCO 2014: TorchRay's multi-label models (Zhang et al.'s EBP models,
  converted from Caffe): torchvision ``vgg16`` (or a Caffe-patched ``resnet50``) whose last linear
  layer has 20 / 80 outputs; Caffe preprocessing: bilinear resize without antialiasing, pixel
  values in 0..255 minus the RGB mean ``(123.68, 116.779, 103.939)``.

A checkpoint is looked for, in order: the ``weights=`` path, the environment variable of
:data:`CHECKPOINTS`, the torch hub cache ``torch.hub.get_dir()/checkpoints/<file>`` (where
torchvision and TorchRay put their downloads). A missing file raises ``FileNotFoundError``
naming the file, the URL to get it from and the parameter / variable to set.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TorchRay's Caffe normalisation expressed as a (mean, std) pair on [0, 1] pixels: (x - m) / (1/255).
CAFFE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)

TARGET_LAYERS = {"vgg": "features.29", "resnet": "layer4"}
NUM_CLASSES = {"imagenet": 1000, "voc": 20, "coco": 80}
_TORCHRAY = "https://dl.fbaipublicfiles.com/torchray/"


@dataclass(frozen=True)
class Checkpoint:
    file: str  # file name in the torch hub cache
    url: str  # where to get it
    env: str  # environment variable holding a path to it


_TORCHVISION = "https://download.pytorch.org/models/"
CHECKPOINTS: dict[tuple[str, str], Checkpoint] = {
    (arch, data): Checkpoint(file, base + file, env)
    for arch, data, file, base, env in [
        ("vgg", "imagenet", "vgg16-397923af.pth", _TORCHVISION, "CAM_CORE_VGG16_WEIGHTS"),
        ("resnet", "imagenet", "resnet50-0676ba61.pth", _TORCHVISION, "CAM_CORE_RESNET50_WEIGHTS"),
        ("vgg", "voc", "vgg16_voc-b050e8c3.pth.tar", _TORCHRAY, "CAM_CORE_VGG16_VOC_WEIGHTS"),
        ("vgg", "coco", "vgg16_coco-d82c8150.pth.tar", _TORCHRAY, "CAM_CORE_VGG16_COCO_WEIGHTS"),
        ("resnet", "voc", "resnet50_voc-9ca920d6.pth.tar", _TORCHRAY, "CAM_CORE_RESNET50_VOC_WEIGHTS"),
        ("resnet", "coco", "resnet50_coco-e99468c5.pth.tar", _TORCHRAY, "CAM_CORE_RESNET50_COCO_WEIGHTS"),
    ]
}


def _check_arch(arch: str, dataset: str) -> Checkpoint:
    if arch not in TARGET_LAYERS:
        raise ValueError(f"arch={arch!r} is not known; use 'vgg' (VGG16) or 'resnet' (ResNet50).")
    if dataset not in NUM_CLASSES:
        raise ValueError(f"dataset={dataset!r} is not known; use one of {sorted(NUM_CLASSES)}.")
    return CHECKPOINTS[(arch, dataset)]


def checkpoint_path(arch: str, dataset: str, weights: str | os.PathLike | None = None,
                    download: bool = False) -> Path:
    """The checkpoint file of ``arch`` on ``dataset`` (see the module docstring for the search order).

    ``download=True`` fetches a missing file into the torch hub cache; nothing else downloads.
    """
    ck = _check_arch(arch, dataset)
    how = (f"Get it from {ck.url}, then pass weights='/path/to/{ck.file}', set the environment variable "
           f"{ck.env}, or put it in the torch hub cache; or pass download=True to fetch it.")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {str(path)!r} (the {arch} {dataset} checkpoint {ck.file}) "
                                    f"does not exist. {how}")
        return path
    if os.environ.get(ck.env):
        path = Path(os.environ[ck.env]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{ck.env}={str(path)!r} does not exist (expected the checkpoint "
                                    f"{ck.file}). {how}")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / ck.file
    if path.is_file():
        return path
    if download:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(ck.url, str(path), progress=True)
        return path
    raise FileNotFoundError(f"the {arch} {dataset} checkpoint {ck.file} was not found at {str(path)!r} "
                            f"(nothing is downloaded unless asked). {how}")


def _state_dict(path: Path) -> dict[str, Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(obj).__name__}).")
    return obj


def _caffe_vgg16(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """TorchRay's VGG16 Caffe checkpoint -> torchvision keys (its classifier has no dropout
    entries, FC weights may be 4-D, the first conv reads BGR): as TorchRay's ``_load_caffe_vgg16``."""
    if "classifier.3.weight" in sd:  # already in torchvision's layout
        return sd
    remap = {"classifier.2.": "classifier.3.", "classifier.4.": "classifier.6."}
    out = {}
    for key, value in sd.items():
        for old, new in remap.items():
            if key.startswith(old):
                key = new + key[len(old):]
        if key == "features.0.weight":
            value = value[:, [2, 1, 0]]  # BGR -> RGB
        elif key.startswith("classifier") and key.endswith("weight"):
            value = value.reshape(value.shape[0], -1)
        out[key] = value
    return out


def _caffe_resnet50(model: nn.Module, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Patch a torchvision ResNet50 to the Caffe definition and rename the checkpoint (as TorchRay's
    ``_load_caffe_resnet50``): conv1 with bias, max-pool without padding, stride on the 1x1 conv."""
    dev = model.fc.weight.device
    model.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True, device=dev)
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for i in (2, 3, 4):
        block = getattr(model, f"layer{i}")[0]
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    out = {}
    for key, value in sd.items():
        key = re.sub(r"bn(\d)\.(0|1)\.(.*)", r"bn\1.\3", key)
        key = re.sub(r"downsample\.(\d)\.(0|1)\.(.*)", r"downsample.\1.\3", key)
        out[key] = value
    out["conv1.weight"] = out["conv1.weight"][:, [2, 1, 0]]  # BGR -> RGB
    return out


def build_model(arch: str = "vgg", dataset: str = "imagenet", weights: str | os.PathLike | None = None,
                download: bool = False, device: torch.device | str = "cpu") -> nn.Module:
    """The paper's classifier for ``dataset`` ("imagenet", "voc", "coco"), in eval mode on ``device``.

    The network is built on the meta device and the checkpoint assigned to it (no random init of
    138M parameters); a checkpoint that does not fit raises ``ValueError`` naming the file.
    """
    path = checkpoint_path(arch, dataset, weights, download)
    sd = _state_dict(path)
    ctor = torchvision.models.vgg16 if arch == "vgg" else torchvision.models.resnet50
    with torch.device("meta"):
        model = ctor(weights=None, num_classes=NUM_CLASSES[dataset])
    if dataset != "imagenet":
        sd = _caffe_vgg16(sd) if arch == "vgg" else _caffe_resnet50(model, sd) if "conv1.bias" in sd else sd
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} is not a {arch} {dataset} checkpoint that fits torchvision's "
                         f"{ctor.__name__}(num_classes={NUM_CLASSES[dataset]}): {err}") from None
    if dataset != "imagenet":  # Caffe's pooling rounds up (TorchRay's _fix_caffe_maxpool)
        for module in model.modules():
            if isinstance(module, nn.MaxPool2d):
                module.ceil_mode = True
    return model.eval().to(device)


# ---- preprocessing: image -> model input, and the same geometry for boxes -------------------
@dataclass(frozen=True)
class Geometry:
    """Where the pixels of an (h, w) image land in the model input: scale, then crop at (left, top)."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    out_w: int
    out_h: int

    def boxes(self, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Map (M, 4) xyxy boxes (pixels of the original image, x1/y1 exclusive) to the model
        input, clipped to it; returns the boxes that keep a positive area and their keep mask."""
        b = boxes.to(torch.float32).reshape(-1, 4)
        scale = torch.tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        shift = torch.tensor([self.left, self.top, self.left, self.top], dtype=torch.float32)
        out = b * scale - shift
        out[:, 0::2] = out[:, 0::2].clamp(0, self.out_w)
        out[:, 1::2] = out[:, 1::2].clamp(0, self.out_h)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out[keep], keep


def _to_float(img: Any) -> Tensor:
    """PIL image or uint8 (C, H, W) tensor -> float (3, H, W) in [0, 1]."""
    if isinstance(img, Image.Image):
        img = TF.pil_to_tensor(img.convert("RGB"))
    if not isinstance(img, Tensor) or img.ndim != 3:
        raise ValueError("preprocess expects a PIL image or a uint8 (C, H, W) tensor")
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return TF.convert_image_dtype(img, torch.float32)


def _size(img: Any) -> tuple[int, int]:
    if isinstance(img, Image.Image):
        return img.height, img.width
    return int(img.shape[-2]), int(img.shape[-1])


class ImageNetPreprocess:
    """torchvision's ImageNet eval transform: resize the shorter side to 256 (bilinear, antialiased),
    centre-crop 224, normalise with the ImageNet mean/std: ``VGG16_Weights.IMAGENET1K_V1.transforms()``."""

    def __init__(self, resize: int = 256, crop: int = 224) -> None:
        self.resize, self.crop = resize, crop
        self.mean, self.std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)

    def geometry(self, h: int, w: int) -> Geometry:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)  # as torchvision's resize
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        top, left = int(round((new_h - self.crop) / 2.0)), int(round((new_w - self.crop) / 2.0))
        return Geometry(new_w / w, new_h / h, left, top, self.crop, self.crop)

    def __call__(self, img: Any) -> Tensor:
        if isinstance(img, Image.Image) and img.mode != "RGB":
            img = img.convert("RGB")
        img = TF.resize(img, [self.resize], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, [self.crop])
        return TF.normalize(_to_float(img), IMAGENET_MEAN, IMAGENET_STD)  # (3, 224, 224)


class CaffePreprocess:
    """TorchRay's transform for its Caffe-converted VOC/COCO models: bilinear resize without
    antialiasing (``F.interpolate``, ``align_corners=False``), then ``255 * x - RGB mean``.

    ``size``: an (h, w) pair (default (224, 224): every image the same size, so batches stack), or
    an int: the shorter side, aspect kept, as TorchRay's pointing game (then use ``batch_size=1``).
    """

    def __init__(self, size: int | tuple[int, int] = (224, 224)) -> None:
        self.size = size
        self.mean, self.std = torch.tensor(CAFFE_MEAN), torch.tensor(CAFFE_STD)

    def geometry(self, h: int, w: int) -> Geometry:
        if isinstance(self.size, int):
            if w < h:
                new_w, new_h = self.size, int(self.size * h / w)
            else:
                new_w, new_h = int(self.size * w / h), self.size
        else:
            new_h, new_w = self.size
        return Geometry(new_w / w, new_h / h, 0, 0, new_w, new_h)

    def __call__(self, img: Any) -> Tensor:
        h, w = _size(img)
        g = self.geometry(h, w)
        x = _to_float(img)[None]  # (1, 3, h, w)
        x = F.interpolate(x, (g.out_h, g.out_w), mode="bilinear", align_corners=False)[0]
        return TF.normalize(x, CAFFE_MEAN, CAFFE_STD)  # (3, out_h, out_w)


def preprocess_for(dataset: str, **kw: Any) -> Callable[[Any], Tensor]:
    """The model's preprocessing: ImageNet's for "imagenet", TorchRay's Caffe one otherwise."""
    return ImageNetPreprocess(**kw) if dataset == "imagenet" else CaffePreprocess(**kw)
