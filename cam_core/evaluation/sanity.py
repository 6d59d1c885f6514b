r"""The sanity check of a faithfulness / localization table: does the true box beat a map that knows nothing?

A metric that cannot tell the ground-truth box (``"Box"``, :mod:`cam_core.evaluation.reference_maps`) from a
constant or a random map measures something other than whether a map points at the object
(e.g. map coverage, or how the model reacts to an out-of-distribution fill). Every chapter that
shows such a table evaluates the sanity maps too, and shows :func:`warning` above its table::

    summary = cc.evaluation.summarize(df)      # with "Box", "Uniform", "Random" among the methods
    display(Markdown(cc.sanity.warning(summary)))   # "" when the check holds

The check compares means (the table's numbers) in the metric's direction
(:data:`cam_core.metrics.HIGHER_IS_BETTER`): ``Box`` must be strictly better than each baseline.
Since issue 20 it also checks every method against ``Uniform`` and ``Random`` on every metric of
the table (:func:`beaten_by_baselines`) and names the metrics where a constant or random map beats
the methods, and it states which metrics are degenerate (every method scores the same, e.g.
single-label IC at 0: :func:`degenerate_metrics`).

The model-randomization and class-sensitivity checks (Adebayo et al., 2018) live in
:mod:`cam_core.evaluation.randomization` and are re-exported here: ``cc.sanity.randomization(model, layer,
method, x)``, ``cc.sanity.class_sensitivity(...)``, ``cc.sanity.randomization_check(...)`` (and
``cc.sanity.check_display(table)``, its table as the book prints it).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cam_core.metrics import HIGHER_IS_BETTER
from cam_core.evaluation.randomization import (  # noqa: F401  re-exported: cc.sanity.randomization(...)
    class_sensitivity,
    head_layers,
    randomizable_layers,
    randomization,
    CHECK_METRICS,
    check_display,
    randomization_check,
    reinitialize,
)

#: the metrics on which the true box must beat a map that knows nothing (issue 11)
SANITY_METRICS: tuple[str, ...] = ("AD", "ADD", "insertion", "deletion", "energy")
#: the maps it must beat
BASELINE_MAPS: tuple[str, ...] = ("Uniform", "Random")


def box_is_better(box: float, other: float, metric: str) -> bool:
    """Whether ``box`` is strictly better than ``other`` on ``metric`` (NaN on either side: False)."""
    if not (np.isfinite(box) and np.isfinite(other)):
        return False
    return box > other if HIGHER_IS_BETTER.get(metric, True) else box < other


def violations(summary: pd.DataFrame, metrics: Sequence[str] = SANITY_METRICS, reference: str = "Box",
               baselines: Sequence[str] = BASELINE_MAPS) -> pd.DataFrame:
    """The cells where ``reference`` does not beat a baseline map.

    Args:
        summary: :func:`cam_core.evaluation.summarize`'s long form (``method, metric, mean``; any
            ``benchmark`` / ``arch`` columns are kept as keys), or a frame with ``value`` in place
            of ``mean``.
        metrics: those checked (only the ones present, with the reference and a baseline measured).

    Returns:
        ``[keys..., metric, baseline, reference_mean, baseline_mean]``, empty when the check holds.
    """
    value = "mean" if "mean" in summary.columns else "value"
    if not {"method", "metric", value} <= set(summary.columns):
        raise ValueError("summary must be cc.evaluation.summarize's long form (method, metric, mean)")
    keys = [c for c in ("benchmark", "arch") if c in summary.columns]
    rows = []
    groups = summary.groupby(keys, sort=False) if keys else [((), summary)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        means = part.set_index(["method", "metric"])[value]
        for metric in metrics:
            if (reference, metric) not in means.index:
                continue
            for base in baselines:
                if (base, metric) in means.index and not box_is_better(
                        float(means[(reference, metric)]), float(means[(base, metric)]), metric):
                    rows.append((*key, metric, base, float(means[(reference, metric)]),
                                 float(means[(base, metric)])))
    return pd.DataFrame(rows, columns=[*keys, "metric", "baseline", "reference_mean", "baseline_mean"])


#: the maps that are not explanations (never counted among "the methods")
NOT_METHODS: frozenset[str] = frozenset({"Box", "Uniform", "Random", "Center"})


def _groups(summary: pd.DataFrame):
    value = "mean" if "mean" in summary.columns else "value"
    if not {"method", "metric", value} <= set(summary.columns):
        raise ValueError("summary must be cc.evaluation.summarize's long form (method, metric, mean)")
    keys = [c for c in ("benchmark", "arch") if c in summary.columns]
    groups = summary.groupby(keys, sort=False) if keys else [((), summary)]
    for key, part in groups:
        yield keys, (key if isinstance(key, tuple) else (key,)), part, value


def beaten_by_baselines(summary: pd.DataFrame, metrics: Sequence[str] | None = None,
                        baselines: Sequence[str] = BASELINE_MAPS) -> pd.DataFrame:
    """Where a map that knows nothing beats the methods: per metric and baseline map, the methods
    (every row of ``summary`` not in :data:`NOT_METHODS`) whose mean it strictly beats.

    Returns ``[keys..., metric, baseline, baseline_mean, n_methods, n_beaten, beaten]`` (``beaten``: the
    methods' names, comma-separated), one row per (metric, baseline) that beats at least one method.
    ``metrics`` default: every metric of ``summary``."""
    rows = []
    for keys, key, part, value in _groups(summary):
        means = part.set_index(["method", "metric"])[value]
        for metric in (list(dict.fromkeys(part["metric"])) if metrics is None else metrics):
            methods = [m for m in dict.fromkeys(part.loc[part["metric"] == metric, "method"])
                       if m not in NOT_METHODS and np.isfinite(float(means[(m, metric)]))]
            for base in baselines:
                if (base, metric) not in means.index or not methods:
                    continue
                b = float(means[(base, metric)])
                won = [m for m in methods if box_is_better(b, float(means[(m, metric)]), metric)]
                if won:
                    rows.append((*key, metric, base, b, len(methods), len(won), ", ".join(won)))
    cols = ["metric", "baseline", "baseline_mean", "n_methods", "n_beaten", "beaten"]
    keys = [c for c in ("benchmark", "arch") if c in summary.columns]
    return pd.DataFrame(rows, columns=[*keys, *cols])


def degenerate_metrics(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The metrics on which every method (at least two; :data:`NOT_METHODS` left out) has the same mean,
    e.g. single-label IC = 0 for all: no mask raises the target's softmax score above the full image's,
    so the metric cannot rank the methods. Returns ``[keys..., metric, value, n_methods]``."""
    rows = []
    for keys, key, part, value in _groups(summary):
        for metric in (list(dict.fromkeys(part["metric"])) if metrics is None else metrics):
            vals = part.loc[(part["metric"] == metric) & ~part["method"].isin(NOT_METHODS), value].to_numpy(float)
            vals = vals[np.isfinite(vals)]
            if vals.size >= 2 and np.all(vals == vals[0]):
                rows.append((*key, metric, float(vals[0]), int(vals.size)))
    keys = [c for c in ("benchmark", "arch") if c in summary.columns]
    return pd.DataFrame(rows, columns=[*keys, "metric", "value", "n_methods"])


def _where(r: pd.Series) -> str:
    return "".join(f"`{r[k]}` " for k in ("benchmark",) if k in r.index and r[k] != "")


def warning(summary: pd.DataFrame, metrics: Sequence[str] = SANITY_METRICS, reference: str = "Box",
            baselines: Sequence[str] = BASELINE_MAPS) -> str:
    """Markdown to show above a table whose run fails a sanity check ("" when every check holds):
    ``reference`` (Box) not beating the baselines on ``metrics``; a baseline map beating methods on any
    metric of the table (:func:`beaten_by_baselines`); a metric that is the same for every method
    (:func:`degenerate_metrics`)."""
    parts = [p for p in (_box_warning(summary, metrics, reference, baselines),
                         _methods_warning(summary, baselines), _degenerate_warning(summary)) if p]
    return "\n\n".join(parts)


def _methods_warning(summary: pd.DataFrame, baselines: Sequence[str]) -> str:
    beaten = beaten_by_baselines(summary, None, baselines)
    if beaten.empty:
        return ""
    where = [f"{_where(r)}{r['metric']} ({r['baseline']} {r['baseline_mean']:.4g} beats {r['n_beaten']} of "
             f"{r['n_methods']} methods: {r['beaten']})" for _, r in beaten.iterrows()]
    names = list(dict.fromkeys(beaten["metric"]))
    return (f"> **Warning: a map that knows nothing beats the methods** on {', '.join(names)}: "
            + "; ".join(where) + ". On these metrics a constant or random map scores better than an "
            "explanation, so a method's rank there says little about whether it finds what the model uses.")


def _degenerate_warning(summary: pd.DataFrame) -> str:
    bad = degenerate_metrics(summary)
    if bad.empty:
        return ""
    where = [f"{_where(r)}{r['metric']} = {r['value']:.4g} for all {r['n_methods']} methods"
             for _, r in bad.iterrows()]
    return ("> **Degenerate metric:** " + "; ".join(where) + ". A metric that gives every method the same "
            "value cannot rank them (single-label IC: no mask raises the class's softmax score above the "
            "full image's).")


def _box_warning(summary: pd.DataFrame, metrics: Sequence[str], reference: str,
                 baselines: Sequence[str]) -> str:
    bad = violations(summary, metrics, reference, baselines)
    if bad.empty:
        return ""
    where = []
    for _, r in bad.iterrows():
        bench = f"`{r['benchmark']}` " if "benchmark" in bad.columns else ""
        where.append(f"{bench}{r['metric']} ({reference} {r['reference_mean']:.4g} vs {r['baseline']} "
                     f"{r['baseline_mean']:.4g})")
    return (f"> **Warning: sanity check failed.** The ground-truth box ({reference}) does not beat "
            f"{' / '.join(baselines)} on {len(bad)} cell(s): " + "; ".join(where) + ". On these metrics this "
            "benchmark cannot tell a map that points at the object from one that knows nothing, so the "
            "ordering of the methods below is not evidence for or against the paper.")


def statements(summary: pd.DataFrame | None = None, randomization_table: pd.DataFrame | None = None,
               contrast: pd.DataFrame | None = None) -> str:
    """Markdown bullets, each computed from this run: which metrics are degenerate
    (:func:`degenerate_metrics`), where a constant or random map beats the methods
    (:func:`beaten_by_baselines`), which metrics the map's contrast dominates
    (:func:`cam_core.evaluation.contrast.dominated`'s table) and which methods fail the randomization check
    (:func:`cam_core.evaluation.randomization.randomization_check`'s table)."""
    lines = []
    if summary is not None:
        deg = degenerate_metrics(summary)
        if deg.empty:
            lines.append("- No metric gives every method the same value in this run.")
        for _, r in deg.iterrows():
            lines.append(f"- **{r['metric']} is degenerate** on {_where(r).strip() or 'this run'}: "
                         f"{r['value']:.4g} for all {r['n_methods']} methods, so it cannot rank them.")
        beaten = beaten_by_baselines(summary)
        if beaten.empty:
            lines.append("- No method loses to the Uniform or the Random map on any metric of this run.")
        for _, r in beaten.iterrows():
            lines.append(f"- On {_where(r)}**{r['metric']}** the {r['baseline']} map ({r['baseline_mean']:.3g}) "
                         f"beats {r['n_beaten']} of {r['n_methods']} methods ({r['beaten']}).")
    if contrast is not None:
        dom = contrast[contrast["dominated"]]
        free = contrast[~contrast["dominated"]]
        if len(dom):
            lines.append("- **Contrast-dominated:** " + ", ".join(
                f"{r.metric} (moves {r.range_power:.3g} under s**p, methods {r.range_methods:.3g} apart"
                + (f"; their order vs p = 1: Kendall tau ≥ {r.order_tau:.2f}"
                   if pd.notna(getattr(r, "order_tau", None)) else "") + ")"
                for r in dom.itertuples()) + ": raising a map to a power, which keeps its ranking, moves "
                "these more than the choice of method does, so a method's score there is partly its maps' "
                "contrast (tau near 1: every method moves alike and their order holds).")
        if len(free):
            lines.append("- Not contrast-dominated: " + ", ".join(
                f"{r.metric} (moves {r.range_power:.3g}, methods {r.range_methods:.3g} apart)"
                for r in free.itertuples()) + ".")
    if randomization_table is not None:
        lines += _randomization_statements(randomization_table)
    return "\n".join(lines)


def _spearman_cells(t: pd.DataFrame) -> pd.Series:
    """Per row of a randomization table: ``method (0.92 [0.88, 0.95], 3 of 3 models)``, the interval where
    the table has one (:func:`cam_core.evaluation.statistics.with_ci`), the models failing where several."""
    from cam_core.evaluation.statistics import with_ci

    nan = pd.Series(np.nan, index=t.index)
    cells = with_ci(t["spearman_head"], t.get("spearman_head_low", nan), t.get("spearman_head_high", nan))
    n = t.get("n_models", pd.Series(1, index=t.index))
    failing = t.get("models_failing", nan)
    rows = zip(t["method"], cells, n.fillna(1), failing, strict=True)
    return pd.Series([f"{m} ({c}" + (f", {int(f)} of {int(k)} models)" if k > 1 and pd.notna(f) else ")")
                      for m, c, k, f in rows], index=t.index)


def _randomization_statements(t: pd.DataFrame) -> list[str]:
    """The model-randomization bullets of :func:`statements` from
    :func:`cam_core.evaluation.randomization.randomization_check`'s table: the failures and passes whose
    interval lies wholly on one side of the threshold, then those too close to call."""
    thr = t.attrs.get("threshold", 0.5)
    n = int(t["n_models"].max()) if "n_models" in t.columns and t["n_models"].notna().any() else 1
    over = f"; intervals resample {n} trained models, then the images" if n > 1 else ""
    decided = t["decided"].fillna(True).astype(bool) if "decided" in t.columns else pd.Series(True, t.index)
    fail = t[(t["randomization"] == "fail") & decided]
    ok = t[(t["randomization"] == "pass") & decided]
    close = t[t["randomization"].isin(["pass", "fail"]) & ~decided]
    na = t[t["randomization"] == "n/a"]
    cell = _spearman_cells(t)
    lines = [("- **Fail the model-randomization check** (Spearman correlation with the original maps at or "
              f"above {thr:g} once the head is re-initialised, the whole 95% interval{over}): "
              + ", ".join(cell[fail.index]) + ".")
             if len(fail) else "- No method clearly fails the model-randomization check."]
    if len(ok):
        lines.append(f"- Pass (the whole interval below {thr:g}): " + ", ".join(cell[ok.index]) + ".")
    if len(close):
        lines.append(f"- Too close to call (the interval contains {thr:g}; more images or models decide): "
                     + ", ".join(cell[close.index]) + ".")
    if len(na):
        lines.append("- Not applicable to this model: " + ", ".join(
            f"{r.method} ({r.note})" if "note" in t.columns and r.note else r.method for r in na.itertuples())
            + ".")
    return lines
