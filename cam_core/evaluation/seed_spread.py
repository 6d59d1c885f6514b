"""How much the tables move between independently trained models (issue 20): per-seed means, their
range, the share of each mean's variance that the seeds make, and whether a method's rank holds in
every model. The chapters' sentences about seeds are computed here, never typed.

    df = cc.evaluation.evaluate_seeds(cc.benchmarks.load_seeds("shapes-clutter"), ...)
    cc.seed_spread.table({"shapes-clutter": df})        # benchmark, method, metric, per-seed means, range
    cc.seed_spread.text({"shapes-clutter": df}, methods=cc.PAPER_METHODS)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cam_core.metrics import HIGHER_IS_BETTER
from cam_core.evaluation.statistics import _scale, seed_variance


def _frames(frames: Mapping[str, pd.DataFrame] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(frames, pd.DataFrame):
        df = frames if "benchmark" in frames.columns else frames.assign(benchmark="")
    else:
        df = pd.concat([f.assign(benchmark=name) for name, f in frames.items()], ignore_index=True)
    if "model_seed" not in df.columns:
        raise ValueError("no model_seed column: pass cc.evaluation.evaluate_seeds's frames (one model per seed)")
    return df


def table(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, methods: Sequence[str] | None = None,
          metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Per benchmark, method and metric: the mean of each model seed (columns ``seed <k>``, in the
    table's units), ``range`` (largest minus smallest per-seed mean), ``sd_images`` (the spread of one
    image's value within a model) and ``share_of_mean`` (the share of the variance of the table's mean
    that comes from the seeds, :func:`cam_core.evaluation.statistics.seed_variance`)."""
    df = _frames(frames)
    if methods is not None:
        df = df[df["method"].isin(methods)]
    if metrics is not None:
        df = df[df["metric"].isin(metrics)]
    df = df.dropna(subset=["value"])
    if df.empty:
        return pd.DataFrame()
    means = (df.assign(value=df["value"] * df["metric"].map(_scale))
             .groupby(["benchmark", "method", "metric", "model_seed"], sort=False)["value"].mean()
             .unstack("model_seed"))
    means.columns = [f"seed {k}" for k in means.columns]
    out = means.assign(range=means.max(axis=1) - means.min(axis=1)).reset_index()
    sv = seed_variance(df)[["benchmark", "method", "metric", "var_within", "share_of_mean"]]
    out = out.merge(sv, on=["benchmark", "method", "metric"], how="left")
    out["sd_images"] = np.sqrt(out.pop("var_within"))
    return out


def ranks(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, method: str, others: Sequence[str],
          metrics: Sequence[str]) -> pd.DataFrame:
    """``method``'s rank among ``[method, *others]`` (1 = best, by the metric's direction) in each model
    seed: benchmark, metric, model_seed, rank."""
    df = _frames(frames)
    df = df[df["method"].isin([method, *others]) & df["metric"].isin(metrics)]
    means = df.groupby(["benchmark", "metric", "model_seed", "method"], sort=False)["value"].mean().reset_index()
    rows = []
    for (bench, metric, seed), g in means.groupby(["benchmark", "metric", "model_seed"], sort=False):
        higher = HIGHER_IS_BETTER.get(metric, True)
        order = g.sort_values("value", ascending=not higher)["method"].tolist()
        if method in order:
            rows.append((bench, metric, seed, order.index(method) + 1))
    return pd.DataFrame(rows, columns=["benchmark", "metric", "model_seed", "rank"])


def text(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, methods: Sequence[str],
         metrics: Sequence[str] | None = None, method: str = "LIFT-CAM") -> str:
    """Sentences on the spread between seeds, from this run's numbers: how many models, the largest
    and the median range of the methods' per-seed means per metric, the median share of each mean's
    variance that the seeds make, and in how many (benchmark, metric) cells ``method`` keeps one rank
    in every model."""
    t = table(frames, methods=methods, metrics=metrics)
    if t.empty:
        return "No model-seed results in this run."
    seeds = [c for c in t.columns if c.startswith("seed ")]
    if len(seeds) < 2:
        return (f"This run has one trained model per benchmark ({seeds[0] if seeds else 'seed 0'}): the intervals "
                "cover images only, not the spread between training runs.")
    parts = []
    for metric, g in t.groupby("metric", sort=False):
        worst = g.loc[g["range"].idxmax()]
        parts.append(f"{metric} {g['range'].median():.2f} (largest {worst['range']:.2f}, {worst['method']} on "
                     f"`{worst['benchmark']}`)")
    share = t["share_of_mean"].median()
    r = ranks(frames, method, [m for m in methods if m != method], list(dict.fromkeys(t["metric"])))
    stable = r.groupby(["benchmark", "metric"])["rank"].nunique()
    first = r.groupby(["benchmark", "metric"])["rank"].apply(lambda s: bool((s == 1).all()))
    return (f"**Between the {len(seeds)} trained models** (model seeds {', '.join(s[5:] for s in seeds)}: "
            f"another initialisation and data order each, the same images), the per-seed means of the methods "
            f"differ by (median range per metric, in the table's units) {'; '.join(parts)}. The seeds make a "
            f"median {share:.0%} of the variance of a table's mean (the rest is between images); the "
            f"intervals above resample seeds and then images, so they include this spread. {method} keeps the same rank among the {len(methods)} methods in every model in "
            f"{int((stable == 1).sum())} of {len(stable)} (benchmark, metric) cells, and is first in every "
            f"model in {int(first.sum())} of them.")
