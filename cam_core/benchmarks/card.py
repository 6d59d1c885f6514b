"""The embedded benchmark's dataset card (``data/models/CARD.md``) and its example figure."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cam_core.benchmarks import checkpoints, shapes, store
from cam_core.benchmarks.generator import CLASS_NAMES, GENERATOR_VERSION, IMAGE_SIZE, MEAN, STD, VARIANTS

log = logging.getLogger(__name__)
FIGURE = "examples.png"


_NAN = float("nan")
#: the card's models table: header and cell of each column, from a manifest record (``key``, ``rec``)
_MODEL_COLUMNS: list[tuple[str, Callable[[str, dict[str, Any]], str]]] = [
    ("model", lambda k, r: f"`{k}`"),
    ("recipe", lambda k, r: checkpoints.record_target(r)),
    ("metric", lambda k, r: str(r.get("metric", ""))),
    ("held-out score", lambda k, r: f"{r.get('score', _NAN):.4f}"),
    ("top-1 softmax > 0.99", lambda k, r: f"{r.get('share_above_0.99', _NAN):.3f}"),
    ("ECE", lambda k, r: f"{r.get('ece', _NAN):.3f}"),
    ("params", lambda k, r: str(r.get("params", ""))),
    ("train time (s)", lambda k, r: f"{r.get('train_seconds', _NAN):.0f}"),
    ("threads", lambda k, r: str(r.get("threads", ""))),
    ("seed", lambda k, r: str(r.get("seed", ""))),
    ("torch", lambda k, r: str(r.get("torch", ""))),
    ("sha256 (state)", lambda k, r: f"`{str(r.get('sha256', ''))[:16]}`"),
]
#: columns the committed card keeps for the record and chapter 0's compact card leaves out
_RECORD_ONLY = {"params", "threads", "torch"}


def dataset_card(manifest: dict[str, Any], figure: str | None = FIGURE, compact: bool = False) -> str:
    """The markdown dataset card: what the generator draws, classes, sizes, splits, model scores.
    ``compact``: the models' table without the params, threads and torch columns (a page that shows the
    parameters in its own table and the versions in its run log: chapter 0)."""
    lines = [
        f"# The embedded benchmark: generated shapes (generator v{GENERATOR_VERSION})",
        "",
        "Made by `cam_core.benchmarks.generator` from a seed (nothing downloaded). Each image is "
        f"{IMAGE_SIZE} x {IMAGE_SIZE} RGB; the models see it normalised with ImageNet's mean "
        f"{MEAN} and std {STD}, so a removed (black) pixel is `-mean/std` in their input, as for the "
        f"paper's torchvision models. An object is one of {len(CLASS_NAMES)} shape classes; its colour "
        "(the farthest of 8 uniform draws from the colour underneath, so it stays visible), texture "
        "(solid or stripes), size, position and rotation (uniform over 360 degrees) are drawn independently "
        "of the class, so only the shape tells the class. Decoys are filled shapes drawn the same way that "
        f"are no class ({', '.join(f'`{d}`' for d in shapes.DECOY_NAMES)}: each resembles a class) and are "
        "never labelled. Backgrounds are smooth colour noise, stripes or colour blobs with pixel noise; "
        "distractors are thin open strokes (segments, arcs). Every object has its tight bounding box "
        "(x0, y0, x1, y1, exclusive ends); decoys have none.",
        "",
        f"Classes ({len(CLASS_NAMES)}): " + ", ".join(f"`{c}`" for c in CLASS_NAMES) + ".",
        "",
        "| variant | mirrors | labels | objects / image | decoys / image | object radius (px) | distractors "
        "| clutter | train | test |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sp in VARIANTS.values():
        lines.append(
            f"| `{sp.name}` | {sp.mirrors} | {'multi-label' if sp.multilabel else 'single-label'} "
            f"| {sp.objects[0]}-{sp.objects[1]} | {sp.decoys[0]}-{sp.decoys[1]} "
            f"| {sp.size[0]:g}-{sp.size[1]:g} "
            f"| {sp.distractors[0]}-{sp.distractors[1]} | {sp.clutter:g} | {sp.n_train} | {sp.n_test} |"
        )
    lines += [
        "",
        "Splits: train and test are generated from disjoint seed streams (a SHA-256 of variant, split, "
        f"seed, chunk and generator version {GENERATOR_VERSION}); `bench.images()` draws from the test "
        "split, which no model saw in training.",
        "",
        f"## Models (model version {checkpoints.CHECKPOINT_VERSION}; held-out test split)",
        "",
        "`vgg`: conv-BN-ReLU blocks with max-pool, explained layer `features.14` (128 maps, 8 x 8), a 4 x 4 "
        "average pool (a 2 x 2 grid of positions) flattened into FC-ReLU-Dropout-FC-ReLU-FC: a non-linear "
        "head that reads every position of every map, as VGG16's. `resnet`: residual blocks, explained "
        "layer `layer3` (64 maps, 8 x 8), global "
        "average pool and one Linear layer (linear head). Two training recipes (`config[\"target\"]` in each "
        "record; `cam_core/benchmarks/training.py`). **label** (the default VGG-style models, issue 20): labels "
        "with label smoothing, contrast jitter and rotations by 90 degrees, no mask and no box anywhere, so "
        "nothing the box-based metrics score is trained in; three independently trained models per benchmark "
        "(model seeds 0, 1, 2: another initialisation, data order, augmentation and dropout; files "
        "`<variant>-vgg-seed<k>.pt`, seed 0 without the suffix), each seed's `shapes-multi` model from a "
        "random start and its `shapes-single` and `shapes-clutter` models fine-tuned from it. **evidence** "
        "(benchmark v4's six models, files `<variant>-<arch>-evidence.pt`; the ablation of chapter 4, and "
        "the stem issue 24's ViT starts from): on a share of each batch a mask toward black of the kinds "
        "the metrics apply "
        "(smooth, constant, random rectangle, per-pixel noise, an object's box kept or removed), with a "
        "target that follows the evidence the mask left over the object's ground-truth box, so the boxes "
        "are in the target. Load one with `cc.benchmarks.load(name, arch=..., model_seed=k, recipe=...)`.",
        "",
    ]
    columns = [(h, cell) for h, cell in _MODEL_COLUMNS if not (compact and h in _RECORD_ONLY)]
    lines += ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for key, rec in sorted(manifest.get("models", {}).items()):
        lines.append("| " + " | ".join(cell(key, rec) for _, cell in columns) + " |")
    if not manifest.get("models"):
        lines.append(f"| (no model trained yet: {checkpoints.RETRAIN}) |" + " |" * (len(columns) - 1))
    under = [k for k, r in sorted(manifest.get("models", {}).items()) if r.get("score", 1.0) < 0.9]
    if under:
        names = ", ".join(f"`{k}`" for k in under)
        lines += ["", f"Under the 0.9 bar (top-1 or mAP): {names}. Their schedules (`CONFIGS` in "
                  "`cam_core/benchmarks/training.py`) were sized to the CPU time available when they were "
                  "trained, and their training loss was still falling at the last epoch: a longer schedule "
                  "is the next thing to try. Results on these models are reported, but read them with that "
                  "in mind."]
    lines += ["", "Metric: top-1 accuracy (single-label) or mAP over classes (multi-label), on the full "
              "test split; top-1 softmax > 0.99: the share of test images whose highest softmax score "
              "exceeds 0.99; ECE: expected calibration error, 15 bins (top-1 softmax vs. correctness, or "
              "per-class sigmoid vs. label for multi-label). Train time: wall-clock seconds on the machine "
              "and threads shown (a shared, busy CPU makes it longer)."]
    if figure:
        lines += ["", f"![Examples: test images with their boxes]({figure})", "",
                  f"Figure: `{figure}` (next to this card), test images of each variant with their boxes."]
    return "\n".join(lines) + "\n"


def examples_figure(data_dir: str | os.PathLike[str] | None = None,
                    out: str | os.PathLike[str] | None = None, n: int = 8, seed: int = 0) -> Any:
    """The card's figure: ``n`` test images of each variant with their labelled boxes."""
    import matplotlib.pyplot as plt

    from cam_core.plotting import draw_boxes, save_figure, to_image

    variants = list(VARIANTS)
    fig, axes = plt.subplots(len(variants), n, figsize=(1.6 * n, 1.75 * len(variants)), squeeze=False)
    for r, v in enumerate(variants):
        data = store.dataset(v, "test", seed=seed, n=n, data_dir=data_dir, cache=False)
        for i in range(n):
            s = data.sample(i)
            ax = axes[r, i]
            ax.axis("off")
            ax.imshow(to_image(s.x, MEAN, STD), interpolation="nearest")
            draw_boxes(ax, s.boxes, s.box_labels, CLASS_NAMES)
        axes[r, 0].set_title(v, fontsize=8, loc="left")
    fig.tight_layout()
    if out is not None:
        save_figure(fig, out, dpi=80)
    return fig


def write_card(data_dir: Path, figure: bool = True) -> Path:
    """Regenerate ``<data_dir>/models/CARD.md`` (and its example figure when missing)."""
    folder = Path(data_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    if figure and not (folder / FIGURE).exists():
        try:
            examples_figure(data_dir=data_dir, out=folder / FIGURE)
        except Exception as err:  # the figure is a nicety: the card (and the model) are still written
            log.warning("could not draw %s (%s); card written without it", FIGURE, err)
            figure = False
    text = dataset_card(checkpoints.read_manifest(data_dir), figure=FIGURE if figure else None)
    checkpoints.write_atomic(folder / "CARD.md", text)
    return folder / "CARD.md"


def models_table(data_dir: Path, n_test: int | None = None, device: Any = "cpu") -> Any:
    """Every model of the manifest (each recipe and model seed), scored now on ``n_test`` held-out test
    images (None: the whole split): a DataFrame with ``model, benchmark, arch, recipe, model seed,
    metric, held-out score, top-1 softmax > 0.99, ECE, train time (s)`` (chapter 0)."""
    import pandas as pd

    from cam_core.benchmarks import scores

    rows = []
    for key, rec in sorted(checkpoints.read_manifest(data_dir).get("models", {}).items()):
        recipe, seed = checkpoints.record_target(rec), int(rec.get("seed", 0))
        model = checkpoints.load_model(rec["variant"], rec["arch"], data_dir, device, seed, recipe)
        data = store.dataset(rec["variant"], "test", seed=0, n=n_test, data_dir=data_dir)
        multilabel = VARIANTS[rec["variant"]].multilabel
        rep = scores.report(scores.logits_of(model, data, device=device), data.labels, multilabel)
        rows.append({"model": key, "benchmark": rec["variant"], "arch": rec["arch"], "recipe": recipe,
                     "model seed": seed, "metric": rep["metric"], "held-out score": rep["score"],
                     "top-1 softmax > 0.99": rep["share_above_0.99"], "ECE": rep["ece"],
                     "train time (s)": rec.get("train_seconds", float("nan")), "scored on": len(data)})
    return pd.DataFrame(rows)


def models_text(models: Any, bar: float = 0.9) -> str:
    """Computed sentences on :func:`models_table`: the score range per recipe and architecture, and the
    spread between the seeds of each benchmark."""
    n = sorted(set(models["scored on"])) if "scored on" in models else []
    lines = [f"Each model scored on {' or '.join(f'{k:,}' for k in n)} held-out test images."] if n else []
    for (recipe, arch), g in models.groupby(["recipe", "arch"], sort=True):
        low = g.loc[g["held-out score"].idxmin()]
        lines.append(f"`{recipe}` / `{arch}`: {len(g)} models, held-out scores {g['held-out score'].min():.4f} to "
                     f"{g['held-out score'].max():.4f} ({'all' if (g['held-out score'] >= bar).all() else 'not all'} "
                     f"at least {bar:.2f}; lowest `{low['model']}`), ECE {g['ECE'].min():.3f} to {g['ECE'].max():.3f}.")
    seeded = models[models["recipe"] == "label"].groupby("benchmark")["held-out score"]
    spread = seeded.max() - seeded.min()
    if len(spread) and (seeded.size() > 1).any():
        lines.append("Between the seeds of one benchmark the held-out score differs by at most "
                     f"{spread.max():.4f} (`{spread.idxmax()}`).")
    return "\n\n".join(lines)
