"""PASCAL VOC 2007 test: 4,952 images, 20 classes, multi-label, with every object's box."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cam_core.benchmarks.real import FolderBenchmark, data_root, require

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
_INDEX = {c: i for i, c in enumerate(VOC_CLASSES)}
_DOWNLOAD = ("Download VOCtest_06-Nov-2007.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ "
             "and extract it (it unpacks to VOCdevkit/VOC2007).")


def parse_voc_xml(path: Path, skip_difficult: bool = False) -> tuple[Tensor, Tensor]:
    """Boxes (M, 4) xyxy and classes (M,) of a VOC annotation file.

    VOC coordinates are 1-based and inclusive (``xmin..xmax``); they become 0-based with an
    exclusive end: ``(xmin - 1, ymin - 1, xmax, ymax)``, as TorchRay's ``voc_as_mask`` reads them.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"cannot parse the VOC annotation {str(path)!r}: {err}") from None
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in _INDEX:
            raise ValueError(f"{str(path)!r}: unknown VOC class {name!r}")
        if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{str(path)!r}: object {name!r} has no <bndbox>")
        x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x0 - 1, y0 - 1, x1, y1])
        labels.append(_INDEX[name])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def _find_voc2007(root: Path) -> Path:
    for cand in (root / "VOCdevkit" / "VOC2007", root / "VOC2007", root):
        if (cand / "Annotations").is_dir() and (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(
        f"no VOC 2007 folder under {str(root)!r}: expected {str(root / 'VOCdevkit' / 'VOC2007')!r} with "
        f"Annotations/, JPEGImages/ and ImageSets/Main/test.txt. {_DOWNLOAD}")


class VOC2007(FolderBenchmark):
    name = "voc2007"
    dataset = "voc"
    multilabel = True
    get_data = _DOWNLOAD
    source = ("PASCAL VOC 2007 test set (Everingham et al.), multi-label: a label vector has a 1 for every "
              "class with an object in the image; every object's box is kept.")

    def __init__(self, data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 arch: str = "vgg", weights: str | os.PathLike | None = None, download: bool = False,
                 model: nn.Module | None = None, target_layer: str | None = None,
                 split: str = "test", skip_difficult: bool = False,
                 size: int | tuple[int, int] = (224, 224)) -> None:
        root = data_root(data_dir, "CAM_CORE_VOC", "PASCAL VOC 2007")
        self.voc = _find_voc2007(root)
        split_file = require(self.voc / "ImageSets" / "Main" / f"{split}.txt", f"the VOC 2007 {split} list",
                             _DOWNLOAD)
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise ValueError(f"{str(split_file)!r} lists no images")
        for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):  # check one up front
            require(self.voc / sub / f"{self.ids[0]}{ext}", f"the files of {split}.txt in {sub}/", _DOWNLOAD)
        self.skip_difficult = skip_difficult
        self.class_names = list(VOC_CLASSES)
        self._setup(root, device, arch, weights, download, model, target_layer, {"size": size})

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, i: int) -> tuple[Path, Tensor, Tensor, Tensor]:
        xml = require(self.voc / "Annotations" / f"{self.ids[i]}.xml", f"the boxes of image {self.ids[i]}")
        boxes, box_labels = parse_voc_xml(xml, self.skip_difficult)
        label = torch.zeros(len(VOC_CLASSES))
        label[box_labels] = 1.0  # (20,) multi-hot
        return self.voc / "JPEGImages" / f"{self.ids[i]}.jpg", label, boxes, box_labels


def voc2007(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
            weights: str | os.PathLike | None = None, **kw: Any) -> VOC2007:
    """PASCAL VOC 2007 test with TorchRay's multi-label VGG16 (``arch="resnet"``: its ResNet50).

    Layout (``data_dir`` or ``$CAM_CORE_VOC``; ``VOCdevkit/VOC2007`` or ``VOC2007`` itself also work)::

        <data_dir>/VOCdevkit/VOC2007/JPEGImages/000001.jpg ...
        <data_dir>/VOCdevkit/VOC2007/Annotations/000001.xml ...
        <data_dir>/VOCdevkit/VOC2007/ImageSets/Main/test.txt

    Data: ``VOCtest_06-Nov-2007.tar`` from http://host.robots.ox.ac.uk/pascal/VOC/voc2007/.
    Model: ``vgg16_voc-b050e8c3.pth.tar`` from https://dl.fbaipublicfiles.com/torchray/ (``weights=`` path,
    ``$CAM_CORE_VGG16_VOC_WEIGHTS``, or the torch hub cache; ``download=True`` fetches it).
    Preprocessing: TorchRay's Caffe transform, resized to ``size=(224, 224)`` (an int keeps the aspect,
    shorter side = size, then ``batch_size=1``). Labels: (20,) multi-hot; ``skip_difficult=True``
    drops objects marked difficult (kept by default, as TorchRay's class ids keep them).
    Other keywords: ``download``, ``model`` and ``target_layer`` (your own classifier), ``split`` ("test").
    """
    return VOC2007(data_dir, device, arch, weights, **kw)
