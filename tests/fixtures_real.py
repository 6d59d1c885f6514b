"""Tiny copies of the real datasets' folder layouts and file formats (JPEGs made with PIL)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

FAKE_WNIDS = [f"n{i:08d}" for i in range(1000)]  # sorted: index i <-> wnid n0000000i


def jpeg(path: Path, w: int, h: int, rect: tuple[int, int, int, int] | None = None, seed: int = 0) -> None:
    """A w x h JPEG: dim noise, with a white rectangle at pixels [x0:x1, y0:y1] when ``rect`` is given."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    if rect is not None:
        x0, y0, x1, y1 = rect
        arr[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def voc_style_xml(path: Path, filename: str, w: int, h: int,
                  objects: list[tuple[str, tuple[float, float, float, float], int]]) -> None:
    """An annotation in the VOC / ImageNet box format; objects: (name, (x0, y0, x1, y1), difficult)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]:g}</xmin><ymin>{b[1]:g}</ymin><xmax>{b[2]:g}</xmax><ymax>{b[3]:g}</ymax></bndbox>"
        "</object>" for n, b, d in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>x</folder><filename>{filename}</filename><size><width>{w}</width>"
                    f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


# ImageNet: three images; image 1 is 300x200 with a white box at x 50:150, y 20:120 (XML 51 21 150 120)
IMAGENET_IMAGES = {
    1: dict(w=300, h=200, wnid=7, boxes=[(51, 21, 150, 120), (1, 1, 50, 50), (1, 1, 300, 200)],
            rect=(50, 20, 150, 120)),
    2: dict(w=200, h=260, wnid=3, boxes=[(11, 31, 190, 250)], rect=None),
    3: dict(w=224, h=224, wnid=999, boxes=[(1, 1, 224, 224)], rect=None),
}


def make_imagenet(root: Path, layout: str = "flat") -> Path:
    """layout: "flat" (val/*.JPEG + bbox/val/*.xml + LOC_synset_mapping.txt), "folders" (val/<wnid>/ +
    val_bbox/), "kaggle" (ILSVRC/Data/CLS-LOC/val + LOC_val_solution.csv), "devkit" (flat val + the devkit's
    meta.mat and ground truth, no boxes)."""
    rows = []
    for num, im in IMAGENET_IMAGES.items():
        stem = f"ILSVRC2012_val_{num:08d}"
        wnid = FAKE_WNIDS[im["wnid"]]
        img_dir = {"flat": root / "val", "devkit": root / "val", "folders": root / "val" / wnid,
                   "kaggle": root / "ILSVRC" / "Data" / "CLS-LOC" / "val"}[layout]
        jpeg(img_dir / f"{stem}.JPEG", im["w"], im["h"], im["rect"], seed=num)
        if layout in ("flat", "folders"):
            xml_dir = root / ("bbox/val" if layout == "flat" else "val_bbox")
            objects = [(wnid, b, 0) for b in im["boxes"]]
            voc_style_xml(xml_dir / f"{stem}.xml", stem, im["w"], im["h"], objects)
        rows.append(f"{stem}," + " ".join(f"{wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b in im["boxes"]))
    if layout == "kaggle":
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    if layout == "devkit":
        _make_devkit(root)
    else:
        lines = "".join(f"{w} class {i}\n" for i, w in enumerate(FAKE_WNIDS))
        (root / "LOC_synset_mapping.txt").write_text(lines)
    return root


def devkit_id(wnid_index: int) -> int:
    """The ILSVRC2012_ID of a class in the fake devkit: a permutation (as in the real one, not sorted)."""
    return (wnid_index * 7) % 1000 + 1


def _make_devkit(root: Path) -> None:
    import scipy.io as sio

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(devkit_id(i), w, f"class {i}", "", 0, np.zeros(0), 0, 1300) for i, w in enumerate(FAKE_WNIDS)]
    rows.append((1001, "n99999999", "a non-leaf synset", "", 2, np.array([1, 2]), 1, 0))
    arr = np.zeros(len(rows), dtype=[(f, object) for f in fields])
    for k, r in enumerate(rows):
        arr[k] = r
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    sio.savemat(data / "meta.mat", {"synsets": arr})
    gt = [devkit_id(IMAGENET_IMAGES[n]["wnid"]) for n in sorted(IMAGENET_IMAGES)]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{v}\n" for v in gt))


# VOC 2007: six images; 000001 is 250x200 with a dog (11 21 110 120), a difficult person and a second dog
VOC_OBJECTS = {
    "000001": (250, 200, [("dog", (11, 21, 110, 120), 0), ("person", (101, 1, 250, 200), 1),
                          ("dog", (201, 151, 240, 190), 0)]),
    "000002": (200, 300, [("car", (1, 1, 200, 300), 0)]),
    "000004": (240, 240, [("cat", (21, 21, 60, 60), 0), ("bird", (100, 100, 140, 140), 0)]),
    "000006": (180, 220, [("sofa", (5, 5, 100, 100), 1)]),
    "000008": (260, 200, [("tvmonitor", (50, 50, 150, 150), 0)]),
    "000010": (200, 200, [("person", (1, 1, 10, 10), 0), ("horse", (50, 50, 200, 200), 0)]),
}


def make_voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    for k, (stem, (w, h, objs)) in enumerate(VOC_OBJECTS.items()):
        rect = (10, 20, 110, 120) if stem == "000001" else None
        jpeg(voc / "JPEGImages" / f"{stem}.jpg", w, h, rect, seed=k)
        voc_style_xml(voc / "Annotations" / f"{stem}.xml", f"{stem}.jpg", w, h, objs)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{s}\n" for s in VOC_OBJECTS))
    return root


# COCO 2014: category ids 1 person, 3 car, 18 dog (listed out of order); image 99 has no objects
COCO_CATEGORIES = [{"id": 18, "name": "dog", "supercategory": "animal"},
                   {"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"}]
COCO_IMAGES = [(42, 320, 240), (7, 200, 200), (99, 100, 150)]
COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 42, "category_id": 18, "bbox": [10.0, 20.0, 100.0, 50.0], "iscrowd": 0,
     "area": 5000.0},
    {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0.0, 0.0, 32.0, 24.0], "iscrowd": 1, "area": 768.0},
    {"id": 3, "image_id": 7, "category_id": 3, "bbox": [5.5, 6.5, 50.0, 60.0], "iscrowd": 0, "area": 3000.0},
]


def make_coco(root: Path) -> Path:
    images = []
    for k, (iid, w, h) in enumerate(COCO_IMAGES):
        name = f"COCO_val2014_{iid:012d}.jpg"
        jpeg(root / "val2014" / name, w, h, seed=k)
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
    (root / "annotations").mkdir(parents=True)
    data = {"info": {}, "licenses": [], "images": images, "annotations": COCO_ANNOTATIONS,
            "categories": COCO_CATEGORIES}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root
