"""MS COCO 2014 val: 40,504 images (40,137 with objects), 80 classes, multi-label, with every box."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cam_core.benchmarks.real import FolderBenchmark, data_root, require

_DOWNLOAD = ("Download http://images.cocodataset.org/zips/val2014.zip and "
             "http://images.cocodataset.org/annotations/annotations_trainval2014.zip and unzip both in the "
             "data folder (they unpack to val2014/ and annotations/).")


def read_coco(path: Path, include_empty: bool = False,
              skip_crowd: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """Class names (contiguous ids in category-id order) and per-image records from an instances JSON.

    Each record: ``file``, ``id``, ``boxes`` (M, 4) xyxy from COCO's ``[x, y, w, h]`` (0-based pixels),
    ``classes`` (M,). Images are in image-id order; those without objects are left out unless
    ``include_empty``; ``skip_crowd`` drops ``iscrowd`` regions (kept by default, as TorchRay).
    """
    try:
        data = json.loads(path.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        images, anns = data["images"], data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        msg = f"{str(path)!r} is not a COCO instances file ({type(err).__name__}: {err})"
        raise ValueError(msg) from None
    index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in images}
    for a in anns:
        if skip_crowd and a.get("iscrowd", 0):
            continue
        per_image[a["image_id"]].append(a)
    records = []
    for im in sorted(images, key=lambda im: im["id"]):
        objs = per_image[im["id"]]
        if not objs and not include_empty:
            continue
        xywh = torch.tensor([a["bbox"] for a in objs], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # (M, 4) xyxy
        classes = torch.tensor([index[a["category_id"]] for a in objs], dtype=torch.long)
        records.append({"file": im["file_name"], "id": im["id"], "boxes": boxes, "classes": classes})
    return [c["name"] for c in cats], records


class COCO2014(FolderBenchmark):
    name = "coco2014"
    dataset = "coco"
    multilabel = True
    get_data = _DOWNLOAD
    source = ("MS COCO 2014 validation set (Lin et al.), multi-label over the 80 object categories "
              "(contiguous ids in category-id order); every instance's box is kept.")

    def __init__(self, data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 arch: str = "vgg", weights: str | os.PathLike | None = None, download: bool = False,
                 model: nn.Module | None = None, target_layer: str | None = None,
                 include_empty: bool = False, skip_crowd: bool = False,
                 size: int | tuple[int, int] = (224, 224)) -> None:
        root = data_root(data_dir, "CAM_CORE_COCO", "MS COCO 2014")
        self.image_dir = require(root / "val2014", "the COCO val2014 images folder", _DOWNLOAD)
        ann = require(root / "annotations" / "instances_val2014.json", "the COCO 2014 val instances",
                      _DOWNLOAD)
        self.class_names, self.records = read_coco(ann, include_empty, skip_crowd)
        if not self.records:
            raise ValueError(f"{str(ann)!r} lists no images with objects")
        require(self.image_dir / self.records[0]["file"], "the images listed in instances_val2014.json",
                _DOWNLOAD)
        self._setup(root, device, arch, weights, download, model, target_layer, {"size": size})

    def __len__(self) -> int:
        return len(self.records)

    def annotation(self, i: int) -> tuple[Path, Tensor, Tensor, Tensor]:
        rec = self.records[i]
        label = torch.zeros(len(self.class_names))
        label[rec["classes"]] = 1.0  # (80,) multi-hot
        return self.image_dir / rec["file"], label, rec["boxes"], rec["classes"]


def coco2014(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
             weights: str | os.PathLike | None = None, **kw: Any) -> COCO2014:
    """MS COCO 2014 val with TorchRay's multi-label VGG16 (``arch="resnet"``: its ResNet50).

    Layout (``data_dir`` or ``$CAM_CORE_COCO``)::

        <data_dir>/val2014/COCO_val2014_000000000042.jpg ...
        <data_dir>/annotations/instances_val2014.json

    Data: http://images.cocodataset.org/zips/val2014.zip and
    http://images.cocodataset.org/annotations/annotations_trainval2014.zip.
    Model: ``vgg16_coco-d82c8150.pth.tar`` from https://dl.fbaipublicfiles.com/torchray/ (``weights=`` path,
    ``$CAM_CORE_VGG16_COCO_WEIGHTS``, or the torch hub cache; ``download=True`` fetches it).
    Preprocessing: TorchRay's Caffe transform at ``size=(224, 224)`` (an int keeps the aspect; then
    ``batch_size=1``). Labels: (80,) multi-hot; images without objects are left out unless
    ``include_empty=True``; crowd regions are kept unless ``skip_crowd=True``.
    Other keywords: ``download``, ``model`` and ``target_layer`` (your own classifier).
    """
    return COCO2014(data_dir, device, arch, weights, **kw)
