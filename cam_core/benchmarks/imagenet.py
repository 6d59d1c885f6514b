"""ILSVRC2012 validation: 50,000 images, 1000 classes, with the localisation boxes.

Accepts the layouts people have: the flat ``val/`` folder of the original tar or class
subfolders ``val/n01440764/...`` (torchvision's ``ImageNet``, ``valprep.sh``), or the Kaggle
release (``ILSVRC/Data/CLS-LOC/val``, ``LOC_val_solution.csv``, ``LOC_synset_mapping.txt``).
Class index = position of the WordNet id in the sorted list of the 1000 ids (torchvision's order).
"""
from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, VGG16_Weights

from cam_core.benchmarks.real import FolderBenchmark, data_root, require

_WNID = re.compile(r"^n\d{8}$")
_EXTS = {".jpeg", ".jpg", ".png"}
_DOWNLOAD = ("Get ILSVRC2012_img_val.tar, ILSVRC2012_bbox_val_v3.tgz (and ILSVRC2012_devkit_t12.tar.gz) from "
             "https://image-net.org/download-images, or the Kaggle 'imagenet-object-localization-challenge' "
             "release; see cam_core.benchmarks.imagenet.imagenet's docstring for the layout.")


def parse_imagenet_xml(path: Path) -> tuple[list[str], Tensor]:
    """WordNet ids and boxes (M, 4) of an ImageNet box XML (VOC format).

    Read as VOC's 1-based inclusive pixels (the devkit's convention): ``(xmin - 1, ymin - 1, xmax, ymax)``.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"cannot parse the ImageNet box file {str(path)!r}: {err}") from None
    names, boxes = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        names.append((obj.findtext("name") or "").strip())
        boxes.append([x0 - 1, y0 - 1, x1, y1])
    return names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def _read_solution_csv(path: Path) -> dict[str, tuple[list[str], Tensor]]:
    """Kaggle's LOC_val_solution.csv: ``ImageId,PredictionString`` with ``wnid x0 y0 x1 y1 ...``."""
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            tok = row["PredictionString"].split()
            names = tok[0::5]
            vals = [[float(v) for v in tok[k + 1 : k + 5]] for k in range(0, len(tok), 5)]
            b = torch.tensor(vals, dtype=torch.float32).reshape(-1, 4)
            out[row["ImageId"]] = (names, b - torch.tensor([1.0, 1.0, 0.0, 0.0]))  # as the XML
    return out


def _devkit(root: Path) -> Path | None:
    for cand in (root / "ILSVRC2012_devkit_t12", root / "devkit", root):
        if (cand / "data" / "meta.mat").is_file():
            return cand
    return None


def _meta_mat(devkit: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WordNet id of the 1000 leaf synsets, from the devkit's meta.mat."""
    try:
        import scipy.io as sio
    except ImportError as err:  # scipy comes with most installs; only this layout needs it
        raise ValueError("reading the devkit's meta.mat needs scipy (pip install scipy), or put Kaggle's "
                         "LOC_synset_mapping.txt in the data folder") from err
    meta = sio.loadmat(str(devkit / "data" / "meta.mat"), squeeze_me=True)["synsets"]
    return {int(m["ILSVRC2012_ID"]): str(m["WNID"]) for m in meta if int(m["num_children"]) == 0}


class ImageNetVal(FolderBenchmark):
    name = "imagenet"
    dataset = "imagenet"
    multilabel = False
    get_data = _DOWNLOAD
    source = ("ILSVRC2012 validation set (Russakovsky et al.): one label per image; the boxes of the "
              "localisation task (every box of the image's class).")

    def __init__(self, data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 arch: str = "vgg", weights: str | os.PathLike | None = None, download: bool = False,
                 model: nn.Module | None = None, target_layer: str | None = None,
                 synsets: str | os.PathLike | None = None,
                 require_boxes: bool = True) -> None:
        root = data_root(data_dir, "CAM_CORE_IMAGENET", "ImageNet (ILSVRC2012 val)")
        self._find_images(root)
        self._find_annotations(root, require_boxes)
        self.wnids = self._find_synsets(root, synsets)
        self._index = {w: i for i, w in enumerate(self.wnids)}
        self.class_names = list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])
        self._setup(root, device, arch, weights, download, model, target_layer)
        meta = (VGG16_Weights if arch == "vgg" else ResNet50_Weights).IMAGENET1K_V1.meta
        acc = meta["_metrics"]["ImageNet-1K"]
        self.reported = f" (top-1 {acc['acc@1']:.2f}% on ImageNet val as torchvision reports it)"

    # -- layout discovery (everything checked up front, with the path in the message) -----------
    def _find_images(self, root: Path) -> None:
        cands = [root / "val", root / "ILSVRC" / "Data" / "CLS-LOC" / "val"]
        val = next((c for c in cands if c.is_dir()), None)
        if val is None:
            raise FileNotFoundError(f"no ImageNet validation images: expected the folder {str(cands[0])!r} "
                                    f"(or {str(cands[1])!r}). {_DOWNLOAD}")
        files: list[tuple[str, Path, str | None]] = []  # (stem, path, class folder)
        for entry in os.scandir(val):
            if entry.is_dir() and _WNID.match(entry.name):
                files += [(Path(f.name).stem, Path(f.path), entry.name) for f in os.scandir(entry.path)
                          if Path(f.name).suffix.lower() in _EXTS]
            elif Path(entry.name).suffix.lower() in _EXTS:
                files.append((Path(entry.name).stem, Path(entry.path), None))
        if not files:
            raise FileNotFoundError(f"{str(val)!r} holds no images (*.JPEG, flat or in n######## "
                                    f"subfolders). {_DOWNLOAD}")
        files.sort()  # by file name: the same order whichever layout
        self.val = val
        self.stems = [f[0] for f in files]
        self.paths = [f[1] for f in files]
        self.folders = [f[2] for f in files]

    def _find_annotations(self, root: Path, require_boxes: bool) -> None:
        xml_cands = [root / "bbox" / "val", root / "val_bbox", root / "bbox",
                     root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"]
        self.xml_dir = next((c for c in xml_cands if c.is_dir() and any(c.glob("*.xml"))), None)
        csv_path = root / "LOC_val_solution.csv"
        self.solution = _read_solution_csv(csv_path) if self.xml_dir is None and csv_path.is_file() else None
        self.devkit = _devkit(root)
        self.id_to_wnid = _meta_mat(self.devkit) if self.devkit is not None else None
        self.ground_truth: list[int] | None = None
        gt = (self.devkit / "data" / "ILSVRC2012_validation_ground_truth.txt") if self.devkit else None
        if gt is not None and gt.is_file():
            self.ground_truth = [int(v) for v in gt.read_text().split()]  # ILSVRC2012_ID per image number
        has_boxes = self.xml_dir is not None or self.solution is not None
        if require_boxes and not has_boxes:
            raise FileNotFoundError(
                f"no ImageNet validation boxes: expected box XMLs in {str(xml_cands[0])!r} "
                f"(ILSVRC2012_bbox_val_v3.tgz unpacked; or {str(xml_cands[1])!r}) or Kaggle's "
                f"{str(csv_path)!r}. Pass require_boxes=False to load without boxes (labels then come "
                f"from class subfolders or the devkit). {_DOWNLOAD}")
        labelled = (has_boxes or self.ground_truth is not None or all(self.folders))
        if not labelled:
            raise FileNotFoundError(f"no labels for the images in {str(self.val)!r}: need class subfolders, "
                                    f"box XMLs, LOC_val_solution.csv, or the devkit's ground truth. "
                                    f"{_DOWNLOAD}")
        if self.xml_dir is not None:
            require(self.xml_dir / f"{self.stems[0]}.xml", f"the box file of {self.stems[0]}", _DOWNLOAD)

    def _find_synsets(self, root: Path, synsets: str | os.PathLike | None) -> list[str]:
        """The 1000 WordNet ids, sorted; from the first source present."""
        found: set[str] = set()
        mapping = Path(synsets) if synsets is not None else root / "LOC_synset_mapping.txt"
        if synsets is not None:
            require(mapping, "the synset list given as synsets=")
        if mapping.is_file():
            found = {line.split()[0] for line in mapping.read_text().splitlines() if line.strip()}
        elif self.id_to_wnid is not None:
            found = set(self.id_to_wnid.values())
        elif all(self.folders) and len({*self.folders}) == 1000:
            found = set(self.folders)  # type: ignore[arg-type]
        elif self.solution is not None:
            found = {n for names, _ in self.solution.values() for n in names}
        elif self.xml_dir is not None:
            found = {n for f in self.xml_dir.glob("*.xml") for n in parse_imagenet_xml(f)[0]}
        if len(found) != 1000 or not all(_WNID.match(w) for w in found):
            raise ValueError(
                f"cannot tell the 1000 ImageNet class ids (WordNet ids) in {str(root)!r}: found "
                f"{len(found)}. Put Kaggle's LOC_synset_mapping.txt (one 'n01440764 tench, ...' per line) "
                "in the data folder or pass synsets='/path/to/it', or add the devkit "
                "(ILSVRC2012_devkit_t12/data/meta.mat).")
        return sorted(found)

    # -- the dataset --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def _boxes(self, stem: str) -> tuple[list[str], Tensor]:
        if self.xml_dir is not None:
            xml = require(self.xml_dir / f"{stem}.xml", f"the box file of {stem}")
            return parse_imagenet_xml(xml)
        if self.solution is not None:
            if stem not in self.solution:
                raise ValueError(f"{stem} is not in LOC_val_solution.csv")
            return self.solution[stem]
        return [], torch.zeros(0, 4)

    def _wnid(self, i: int, names: list[str]) -> str:
        if self.folders[i] is not None:
            return self.folders[i]  # type: ignore[return-value]
        if self.ground_truth is not None and self.id_to_wnid is not None:
            num = int(self.stems[i].rsplit("_", 1)[-1])  # ILSVRC2012_val_00000001 -> 1
            return self.id_to_wnid[self.ground_truth[num - 1]]
        if names:
            return names[0]
        raise ValueError(f"no label for image {self.stems[i]}")

    def annotation(self, i: int) -> tuple[Path, Tensor, Tensor, Tensor]:
        names, boxes = self._boxes(self.stems[i])
        wnid = self._wnid(i, names)
        if wnid not in self._index:
            raise ValueError(f"image {self.stems[i]}: class id {wnid!r} is not an ImageNet class")
        box_labels = torch.tensor([self._index.get(n, -1) for n in names], dtype=torch.long)
        return self.paths[i], torch.tensor(self._index[wnid]), boxes, box_labels


def imagenet(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", arch: str = "vgg",
             weights: str | os.PathLike | None = None, **kw: Any) -> ImageNetVal:
    """ILSVRC2012 validation with torchvision's VGG16 (``arch="resnet"``: ResNet50), ``IMAGENET1K_V1``.

    Layout (``data_dir`` or ``$CAM_CORE_IMAGENET``), images flat or in class subfolders::

        <data_dir>/val/ILSVRC2012_val_00000001.JPEG ...        (or val/n01440764/ILSVRC2012_val_....JPEG)
        <data_dir>/bbox/val/ILSVRC2012_val_00000001.xml ...    (or <data_dir>/val_bbox/*.xml)
        <data_dir>/LOC_synset_mapping.txt  or  <data_dir>/ILSVRC2012_devkit_t12/data/meta.mat
            (the 1000 class ids; not needed with all 1000 class subfolders or all 50,000 box files)

    Kaggle's release works as unpacked (``ILSVRC/Data/CLS-LOC/val``, ``ILSVRC/Annotations/CLS-LOC/val``
    or ``LOC_val_solution.csv``, ``LOC_synset_mapping.txt``).
    Data: ILSVRC2012_img_val.tar, ILSVRC2012_bbox_val_v3.tgz, ILSVRC2012_devkit_t12.tar.gz from
    https://image-net.org/download-images (or kaggle.com/c/imagenet-object-localization-challenge).
    Model: ``vgg16-397923af.pth`` / ``resnet50-0676ba61.pth`` (https://download.pytorch.org/models/), from
    ``weights=``, ``$CAM_CORE_VGG16_WEIGHTS`` / ``$CAM_CORE_RESNET50_WEIGHTS`` or the torch hub cache
    (``download=True`` fetches it). Preprocessing: resize 256, centre crop 224, ImageNet mean/std.
    Labels: class index (torchvision order); boxes from the XML (1-based inclusive pixels, as VOC).
    Other keywords: ``model`` and ``target_layer`` (your own classifier), ``synsets`` (path to a synset list),
    ``require_boxes`` (False: load without boxes).
    """
    return ImageNetVal(data_dir, device, arch, weights, **kw)
