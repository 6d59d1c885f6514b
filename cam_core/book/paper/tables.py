"""The paper's Tables 1-6 as data (Jung & Oh, ICCV 2021, as restated in ``DIGEST.md``).

Every table is a long DataFrame ``(table, dataset, method, metric, value)``; ``table(3)`` is Table 3.
``PAPER_COLUMN`` says which of the paper's columns each benchmark stands in for.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

IMAGENET, VOC, COCO, VQA = "ImageNet", "VOC 2007", "COCO 2014", "VQA v2"
DATASETS = (IMAGENET, VOC, COCO)

#: benchmark name (cc.benchmarks.load) -> the paper's column it stands in for
PAPER_COLUMN: dict[str, str] = {
    "shapes-single": IMAGENET,
    "shapes-multi": VOC,
    "shapes-clutter": COCO,
    "imagenet": IMAGENET,
    "voc2007": VOC,
    "coco2014": COCO,
    "shapes-vqa": VQA,
    "vqa2": VQA,
}


#: decimals the paper prints for each metric (used by :func:`style`)
DECIMALS: dict[str, int] = {"IC": 1, "AD": 2, "ADD": 2, "insertion": 4, "deletion": 4, "energy": 2,
                            "pointing": 1, "cosine": 3, "local_accuracy": 4}

#: the paper's table captions, shortened
CAPTIONS: dict[int, str] = {
    1: "SHAP-CAM_P faithfulness (IC, AD, ADD in %), averaged over 10 runs, VGG16, 1,000 images",
    2: "Cosine similarity of each method's coefficients to SHAP-CAM_10k, VGG16, 500 images",
    3: "Faithfulness of the CAM methods (IC, AD, ADD in %), VGG16, 1,000 images",
    4: "Insertion and deletion AUC, VGG16, ImageNet, 1,000 images",
    5: "Energy-based pointing game (% of the map's energy inside the boxes), VGG16, ImageNet, 1,000 images",
    6: "VQA faithfulness (IC, AD, ADD in %), basic VQA model, VQA v2 validation",
}

_METHODS6 = ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM")


def _rows(table: int, by_method: Mapping[str, Mapping[str, tuple[float, ...]]],
          datasets: tuple[str, ...]) -> list[tuple]:
    return [(table, d, m, metric, float(v))
            for m, metrics in by_method.items()
            for metric, values in metrics.items()
            for d, v in zip(datasets, values, strict=True)]


def _all_tables() -> pd.DataFrame:
    rows: list[tuple] = []
    # Table 1: SHAP-CAM_P, P = 1, 10, 100 (columns ImageNet, VOC, COCO)
    rows += _rows(1, {
        "SHAP-CAM_1": {"IC": (25.9, 37.4, 35.2), "AD": (28.16, 22.93, 23.98), "ADD": (32.64, 17.35, 24.07)},
        "SHAP-CAM_10": {"IC": (26.2, 42.7, 40.1), "AD": (27.54, 17.53, 19.07), "ADD": (32.99, 19.95, 27.50)},
        "SHAP-CAM_100": {"IC": (26.4, 43.6, 41.4), "AD": (27.48, 16.71, 18.27), "ADD": (33.03, 20.64, 27.65)},
    }, DATASETS)
    # Table 2: cosine similarity to SHAP-CAM_10k
    cos = ((.489, .404, .441), (.385, .329, .412), (.406, .327, .350), (.195, .181, .157),
           (.972, .888, .908), (.980, .918, .924))
    rows += _rows(2, {m: {"cosine": v} for m, v in zip(_METHODS6, cos, strict=True)}, DATASETS)
    # Table 3: IC / AD / ADD
    t3 = (
        ((24.0, 32.7, 31.9), (31.89, 30.73, 30.74), (30.60, 17.43, 25.66)),
        ((23.1, 33.8, 33.5), (30.53, 17.20, 20.87), (27.98, 15.85, 24.16)),
        ((25.0, 30.5, 31.3), (31.36, 30.04, 29.92), (30.48, 17.09, 24.95)),
        ((22.8, 29.4, 23.9), (29.91, 17.49, 23.66), (27.52, 14.12, 17.35)),
        ((24.1, 34.4, 35.0), (29.41, 25.49, 23.99), (32.52, 19.42, 26.75)),
        ((25.2, 38.7, 39.3), (29.15, 17.15, 18.65), (32.95, 20.09, 26.34)),
    )
    by3 = {m: dict(zip(("IC", "AD", "ADD"), v, strict=True)) for m, v in zip(_METHODS6, t3, strict=True)}
    rows += _rows(3, by3, DATASETS)
    # Table 4: insertion / deletion AUC, ImageNet only
    t4 = ((.4427, .0891), (.4350, .0969), (.4457, .0883), (.4345, .1002), (.4685, .0873), (.4712, .0866))
    by4 = {m: {"insertion": (v[0],), "deletion": (v[1],)} for m, v in zip(_METHODS6, t4, strict=True)}
    rows += _rows(4, by4, (IMAGENET,))
    # Table 5: energy-based pointing game (%), ImageNet only
    t5 = (47.76, 49.14, 47.91, 51.14, 51.87, 52.43)
    rows += _rows(5, {m: {"energy": (v,)} for m, v in zip(_METHODS6, t5, strict=True)}, (IMAGENET,))
    # Table 6: VQA v2
    rows += _rows(6, {"Grad-CAM": {"IC": (41.95,), "AD": (16.71,), "ADD": (9.09,)},
                      "LIFT-CAM": {"IC": (43.39,), "AD": (14.14,), "ADD": (9.58,)}}, (VQA,))
    return pd.DataFrame(rows, columns=["table", "dataset", "method", "metric", "value"])


TABLES: pd.DataFrame = _all_tables()


def table(number: int) -> pd.DataFrame:
    """The paper's Table ``number`` (1..6), long format: dataset, method, metric, value."""
    if number not in CAPTIONS:
        raise ValueError(f"the paper has Tables 1..6; got table={number!r}")
    out = TABLES[TABLES.table == number].drop(columns="table").reset_index(drop=True)
    out.attrs["caption"] = CAPTIONS[number]
    return out


def paper_column(benchmark: str) -> str:
    """The paper's column a benchmark stands in for: ``"shapes-single"`` -> ``"ImageNet"``.

    A paper column name itself ("ImageNet", ...) is returned unchanged."""
    if benchmark in PAPER_COLUMN.values():
        return benchmark
    if benchmark not in PAPER_COLUMN:
        raise ValueError(f"benchmark {benchmark!r} has no column in the paper's tables; known: "
                         f"{', '.join(PAPER_COLUMN)} (or pass the paper column name itself)")
    return PAPER_COLUMN[benchmark]
