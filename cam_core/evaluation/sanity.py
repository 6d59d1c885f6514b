r"""The sanity check of a faithfulness / localization table: does the true box beat a map that knows nothing?

A metric that cannot tell the ground-truth box (``"Box"``, :mod:`cam_core.evaluation.reference_maps`) from a
constant or a random map measures something other than whether a map points at the object
(e.g. map coverage, or how the model reacts to an out-of-distribution fill). Every chapter that
shows such a table evaluates the sanity maps too, and shows :func:`warning` above its table::

    summary = cc.evaluation.summarize(df)      # with "Box", "Uniform", "Random" among the methods
    display(Markdown(cc.sanity.warning(summary)))   # "" when the check holds

The check compares means (the table's numbers) in the metric's direction
(:data:`cam_core.metrics.HIGHER_IS_BETTER`): ``Box`` must be strictly better than each baseline.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cam_core.metrics import HIGHER_IS_BETTER

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


def warning(summary: pd.DataFrame, metrics: Sequence[str] = SANITY_METRICS, reference: str = "Box",
            baselines: Sequence[str] = BASELINE_MAPS) -> str:
    """Markdown to show above a table whose run fails the sanity check ("" when it holds)."""
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
