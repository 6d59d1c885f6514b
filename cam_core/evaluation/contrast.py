r"""How much do the drop metrics measure the map's contrast rather than the method? (issue 20, item 5)

IC / AD / ADD (Eqs. 11-13) multiply the image by the map itself, so a monotone rescaling of a map,
``s ** p``, which keeps every pixel's rank, changes them: a large ``p`` darkens all but the peak
(AD rises, IC falls), a small one keeps most of the image. The energy-based pointing game (Eq. 14,
Table 5) sums the map's values inside the box, so it moves with ``p`` too (a large ``p`` puts the
energy on the peak). :func:`rescaling` measures each method's maps raised to several powers on the
same images; :func:`contrast_table` shows the means per power, and :func:`dominated` compares how far
a metric moves with ``p`` (one method, same ranking) with how far apart the methods are at ``p = 1``,
and how well the methods' order survives. The contrast-free ``AD@q`` / ``ADD@q``
(:mod:`cam_core.metrics.drop`) and the hit pointing game (the peak only) are measured alongside: they
depend on the ranking only, so they must not move at all::

    df = cc.contrast.rescaling(bench, cc.PAPER_METHODS, n_images=60)
    cc.contrast.contrast_table(df)     # metric, method, one column per power, range
    cc.contrast.dominated(df)          # metric, range_power, range_methods, ratio, dominated, order_tau
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from cam_core import metrics as M
from cam_core.runtime import eval_mode

#: the powers the maps are raised to (1 = the map itself)
POWERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
#: the Kendall tau with the p = 1 order (at every power) from which :func:`sentence` says the order holds
ORDER_HOLDS = 0.6
#: the contrast-free columns measured beside IC/AD/ADD and energy (they depend on the map's ranking only)
CONTRAST_FREE: tuple[str, ...] = ("AD@25", "ADD@25", "pointing")


def rescaling(bench: Any, methods: Sequence[str], n_images: int = 60, seed: int = 0,
              powers: Sequence[float] = POWERS, *, baseline: str = "zero", batch_size: int = 16,
              qs: tuple[int, ...] = (25,)) -> pd.DataFrame:
    """IC / AD / ADD, ``AD@q`` / ``ADD@q`` and the two pointing games (``energy``, ``pointing``) of each
    method's maps raised to each power, per image.

    The class explained is the model's top-1 (as in :func:`cam_core.evaluate`); images are the
    benchmark's seeded subset (``bench.subset(n_images, seed)``); ``baseline`` is the fill of a removed
    pixel (:data:`cam_core.metrics.BASELINES`).

    Returns a tidy frame ``image, method, power, metric, value`` (values per image, as cc.evaluate's:
    IC and pointing 0/1 indicators, AD/ADD and energy fractions; energy and pointing NaN for an image with
    no box of the explained class).
    """
    from cam_core.methods.registry import get_method

    for p in powers:
        if not p > 0:
            raise ValueError(f"powers must be > 0 (a monotone rescaling s ** p), got {p}")
    M.check_baseline(baseline)
    mean, std = getattr(bench, "mean", None), getattr(bench, "std", None)
    rows: list[tuple] = []
    for batch in bench.images(n=n_images, seed=seed, batch_size=batch_size):
        model = bench.model_for(batch)
        x = batch.x
        with torch.no_grad(), eval_mode(model):
            t = model(x).argmax(dim=1)
        index = batch.index.tolist()
        boxes = [batch.boxes_for(i, int(t[i])) for i in range(x.shape[0])]
        masks = M.batch_masks(boxes, tuple(x.shape[-2:]))
        for name in methods:
            sal = get_method(name, model, bench.target_layer)(x, target=t).saliency.detach()  # (B, H, W)
            for p in powers:
                s = sal.clamp(0, 1) ** p
                sc = M.confidence_scores(model, x, s, t, mean=mean, std=std, baseline=baseline)
                values = {"IC": M.increase_in_confidence(sc.original, sc.explanation),
                          "AD": M.average_drop(sc.original, sc.explanation),
                          "ADD": M.average_drop_in_deletion(sc.original, sc.inverted),
                          **M.top_q_drops(model, x, s, t, qs, baseline=baseline, mean=mean, std=std),
                          "energy": M.energy_pointing_game(s, masks.to(s.device)),
                          "pointing": M.pointing_game(s, boxes)}
                for metric, v in values.items():
                    rows += [(i, name, float(p), metric, float(val)) for i, val in zip(index, v.tolist())]
    return pd.DataFrame(rows, columns=["image", "method", "power", "metric", "value"])


def _means(df: pd.DataFrame) -> pd.DataFrame:
    from cam_core.metrics import SCALE

    out = df.groupby(["metric", "method", "power"], sort=False)["value"].mean().reset_index()
    out["value"] *= out["metric"].map(lambda m: SCALE.get(m, 1.0))
    return out


def contrast_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric (in the table's units: %) per method and power, one column per power, and
    ``range``: the largest minus the smallest over the powers. Rows in the order metric, method."""
    means = _means(df)
    wide = means.pivot_table(index=["metric", "method"], columns="power", values="value", sort=False)
    wide = wide.reindex(columns=sorted(wide.columns))
    wide.columns = [f"p={p:g}" for p in wide.columns]
    wide["range"] = wide.max(axis=1) - wide.min(axis=1)
    return wide


def dominated(df: pd.DataFrame, reference_power: float = 1.0) -> pd.DataFrame:
    """Per metric: ``range_power`` (the median over methods of how far the metric moves across the powers),
    ``range_methods`` (the largest minus the smallest method mean at ``reference_power``), their
    ``ratio``, ``dominated`` (True when contrast moves the metric more than the choice of method does) and
    ``order_tau`` (the smallest Kendall tau, over the powers, of the methods' order with their order at
    ``reference_power``: 1 when contrast moves every method alike and leaves their ranking alone)."""
    from cam_core.evaluation.statistics import kendall_tau

    means = _means(df)
    table = contrast_table(df)
    rows = []
    for metric in dict.fromkeys(means["metric"]):
        own = means[means["metric"] == metric]
        at = own[own["power"] == float(reference_power)].set_index("method")["value"]
        spread = float(at.max() - at.min()) if len(at) else float("nan")
        moved = float(table.loc[metric, "range"].median())
        taus = [kendall_tau(g.set_index("method")["value"].reindex(at.index), at)
                for _, g in own.groupby("power") if len(at) >= 2]
        taus = [t for t in taus if t == t]  # NaN: every method equal at a power (nothing to order)
        rows.append((metric, moved, spread, moved / spread if spread > 0 else float("inf") if moved > 0 else 0.0,
                     bool(moved > spread), min(taus) if taus else float("nan")))
    return pd.DataFrame(rows, columns=["metric", "range_power", "range_methods", "ratio", "dominated",
                                       "order_tau"])


def sentence(table: pd.DataFrame, metric: str) -> str:
    """One line from :func:`dominated`'s ``table`` on ``metric``: how far contrast moves it, how far apart
    the methods are, and whether their order survives (Kendall tau with ``p = 1`` of at least
    :data:`ORDER_HOLDS` at every power), for the prose beside a table."""
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(f"no {metric!r} row in the table; metrics: {list(table['metric'])}")
    r = rows.iloc[0]
    verdict = "contrast moves it more than the choice of method" if r["dominated"] else \
        "contrast moves it less than the choice of method"
    tau = r["order_tau"]
    if pd.isna(tau):
        order = ""
    elif tau >= ORDER_HOLDS:
        order = f"; the methods' order holds (Kendall tau with p = 1 at least {tau:.2f} at every power)"
    else:
        order = (f"; the methods' order does not hold (Kendall tau with p = 1 falls to {tau:.2f}): "
                 "which method scores best depends on the maps' contrast")
    return (f"{metric} moves {r['range_power']:.3g} points across the powers (median over the methods) "
            f"while the methods are {r['range_methods']:.3g} apart at p = 1: {verdict}{order}")
