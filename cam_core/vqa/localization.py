"""Does the map of an answer point at the object the question is about? (energy game, Eq. 14)

VQA v2 has no question-level boxes, so the paper could not measure this; the embedded
benchmark records the referenced object(s) of every question. Here the energy-based pointing
game is always measured against the referenced objects' boxes (``batch.boxes``), whatever the
model answered: a wrong answer does not change which object the question is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from cam_core.benchmarks.base import Benchmark
from cam_core.methods.registry import get_method
from cam_core.metrics.localization import batch_masks, boxes_mask, energy_pointing_game, pointing_game
from cam_core.vqa.questions import SINGLE_OBJECT_TYPES


def referenced_energy(
    bench: Benchmark,
    methods: Sequence[str],
    n: int | None = 256,
    seed: int = 0,
    batch_size: int = 32,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per (question, method): ``energy`` (share of the map in the referenced boxes, in
    [0, 1]), ``hit`` (classic pointing game), ``box_share`` (the boxes' share of the image, what a
    uniform map would score), ``beats_others`` (1.0 when the answer's object's box holds more
    energy than every other object's box), the question type and whether the answer was right.

    Each method explains the model's own (top-1) answer, with the question bound (tile layout).
    """
    rows = []
    for batch in bench.images(n=n, seed=seed, batch_size=batch_size):
        model = bench.model_for(batch)
        size = tuple(batch.x.shape[-2:])
        masks = batch_masks(batch.boxes, size)  # (B, H, W)
        box_share = masks.flatten(1).float().mean(1)  # (B,)
        for name in methods:
            res = get_method(name, model, bench.target_layer, **(method_kwargs or {}).get(name, {}))(batch.x)
            energy = energy_pointing_game(res.saliency, masks)  # (B,)
            hit = pointing_game(res.saliency, batch.boxes)  # (B,)
            correct = (res.target == batch.labels).cpu()
            beats = _beats_other_objects(bench, batch, res.saliency)  # (B,) or None
            for i in range(len(batch)):
                rows.append(
                    {
                        "index": int(batch.index[i]),
                        "method": name,
                        "question_type": batch.extra.get("question_type", [""] * len(batch))[i],
                        "question": batch.extra.get("question_text", [""] * len(batch))[i],
                        "answer": bench.class_names[int(batch.labels[i])],
                        "predicted": bench.class_names[int(res.target[i])],
                        "correct": bool(correct[i]),
                        "energy": float(energy[i]),
                        "hit": float(hit[i]),
                        "box_share": float(box_share[i]),
                        "beats_others": float("nan") if beats is None else float(beats[i]),
                    }
                )
    return pd.DataFrame(rows)


def _beats_other_objects(bench: Benchmark, batch: Any, saliency: torch.Tensor) -> torch.Tensor | None:
    """1.0 where the answer's object's box holds more of the map's energy than every other object's
    box in the scene (benchmarks that know every object, i.e. with ``object_boxes``), else None."""
    if not hasattr(bench, "object_boxes"):
        return None
    out = []
    for i in range(len(batch)):
        boxes, ref = bench.object_boxes(int(batch.index[i]))
        masks = torch.stack([boxes_mask(b, tuple(saliency.shape[-2:])) for b in boxes]).to(saliency.device)
        e = energy_pointing_game(saliency[i : i + 1].expand(len(boxes), -1, -1), masks)  # (M,)
        others = torch.cat([e[:ref], e[ref + 1 :]])
        out.append(float(len(others) == 0 or bool(e[ref] > others.max())))
    return torch.tensor(out)


_PERCENT = ["energy", "mostly_inside", "hit", "box_share", "beats_others"]


def _aggregate(df: pd.DataFrame, by: list[str], threshold: float) -> pd.DataFrame:
    """Mean of every per-question score (in %) per group of ``by``, the group's size, and the energy's
    95% bootstrap interval over questions (``energy_ci_low``, ``energy_ci_high``, seed 0)."""
    from cam_core.evaluation.statistics import bootstrap_ci

    if df.empty:
        raise ValueError("no localization rows to summarize")
    g = df.assign(mostly_inside=(df["energy"] > threshold).astype(float))
    out = g.groupby(by, sort=False).agg(
        **{c: (c, "mean") for c in _PERCENT}, questions=("energy", "size")
    )
    out[_PERCENT] = 100 * out[_PERCENT]
    ci = g.groupby(by, sort=False)["energy"].apply(lambda e: bootstrap_ci(100 * e.dropna().to_numpy(float)))
    out["energy_ci_low"] = [lo for lo, _ in ci.reindex(out.index)]
    out["energy_ci_high"] = [hi for _, hi in ci.reindex(out.index)]
    return out


def summarize(df: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per method x question type: mean energy (%), the share of questions whose map has more than
    ``threshold`` of its energy in the referenced boxes (%), the pointing-game hit rate (%), the
    boxes' mean share of the image (%, a uniform map's energy), and how often (%) the answer's
    object's box holds more energy than every other object's box (``beats_others``; NaN where the
    benchmark does not know every object)."""
    return _aggregate(df, ["method", "question_type"], threshold)


def single_object_summary(
    df: pd.DataFrame, types: Sequence[str] = SINGLE_OBJECT_TYPES, threshold: float = 0.5
) -> pd.DataFrame:
    """The columns of :func:`summarize` per method, over the questions about one object (``types``)
    taken together: the issue's localization property is ``mostly_inside`` of LIFT-CAM."""
    sel = df[df["question_type"].isin(list(types))]
    if sel.empty:
        raise ValueError(f"no localization rows for question types {list(types)}")
    return _aggregate(sel, ["method"], threshold)


def random_box_chance(bench: Benchmark, df: pd.DataFrame, method: str = "LIFT-CAM",
                      types: Sequence[str] = SINGLE_OBJECT_TYPES) -> float:
    """Chance level of ``beats_others``: the probability that a box picked at random among a scene's
    objects is the referenced one, i.e. the mean of ``1 / (objects in the scene)`` over ``method``'s
    single-object questions (``types``) in ``df`` (rows with an ``index`` into ``bench``)."""
    rows = df[(df["method"] == method) & df["question_type"].isin(list(types))]
    if rows.empty:
        raise ValueError(f"no rows for method {method!r} and question types {list(types)}")
    return float(rows["index"].map(lambda i: 1 / len(bench.object_boxes(int(i))[0])).mean())


def ideal_map_energy(bench: Benchmark, map_size: int, n: int | None = 256, seed: int = 0,
                     types: Sequence[str] = SINGLE_OBJECT_TYPES) -> float:
    """Mean energy share (in [0, 1]) inside the referenced box of the *ideal* map at ``map_size``:
    the box itself averaged into ``map_size x map_size`` cells, then upsampled and min-max
    normalised as every CAM is (``BaseCAM``'s ``u`` and ``s``), over the ``types`` questions of
    the seeded subset. The ceiling a method can reach at that map resolution."""
    import torch.nn.functional as F

    from cam_core.methods.base import normalize_per_image, upsample

    shares = []
    for batch in bench.images(n=n, seed=seed, batch_size=64):
        keep = [i for i, t in enumerate(batch.extra.get("question_type", [])) if t in set(types)]
        if not keep:
            continue
        size = tuple(batch.x.shape[-2:])
        masks = batch_masks([batch.boxes[i] for i in keep], size).float()  # (B, H, W)
        cells = F.adaptive_avg_pool2d(masks[:, None], map_size)[:, 0]  # (B, s, s)
        ideal = normalize_per_image(upsample(cells, size))  # (B, H, W)
        shares.append(energy_pointing_game(ideal, masks.bool()))
    if not shares:
        raise ValueError(f"no questions of types {list(types)} in the subset")
    return float(torch.cat(shares).mean())


def share_mostly_inside(
    df: pd.DataFrame,
    method: str = "LIFT-CAM",
    types: Sequence[str] = SINGLE_OBJECT_TYPES,
    threshold: float = 0.5,
) -> float:
    """Share (in [0, 1]) of ``types`` questions whose ``method`` map has > ``threshold`` energy in the box."""
    table = single_object_summary(df, types, threshold)
    if method not in table.index:
        raise ValueError(f"no rows for method {method!r} and question types {list(types)}")
    return float(table.loc[method, "mostly_inside"]) / 100
