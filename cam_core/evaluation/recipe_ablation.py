"""What the training recipe does to the faithfulness tables (issue 20): the same evaluation on the
default models (``recipe="label"``: no box in the target) and on benchmark v4's models
(``recipe="evidence"``: a target computed from the ground-truth boxes), side by side, and the
computed sentences the chapter states.

    label = cc.evaluation.summarize(df_label); evidence = cc.evaluation.summarize(df_evidence)
    cc.recipe_ablation.table({"label": label, "evidence": evidence}, methods=[...], metrics=["AD", ...])
    cc.recipe_ablation.text({"label": label, "evidence": evidence}, cams=cc.PAPER_METHODS)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from cam_core.metrics import HIGHER_IS_BETTER


def table(summaries: Mapping[str, pd.DataFrame], methods: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Rows ``methods``, columns ``(metric, recipe)``: the mean (table units) of each method under each
    recipe, from :func:`cam_core.evaluation.summarize` frames (long form) keyed by recipe."""
    parts = []
    for recipe, s in summaries.items():
        part = s[s["method"].isin(methods) & s["metric"].isin(metrics)]
        parts.append(part.assign(recipe=recipe)[["method", "metric", "recipe", "mean"]])
    long = pd.concat(parts, ignore_index=True)
    wide = long.pivot_table(index="method", columns=["metric", "recipe"], values="mean", sort=False)
    cols = [(m, r) for m in metrics for r in summaries if (m, r) in wide.columns]
    return wide.reindex(index=[m for m in methods if m in wide.index], columns=pd.MultiIndex.from_tuples(cols))


def _rank(s: pd.DataFrame, metric: str, method: str, cams: Sequence[str]) -> int | None:
    part = s[(s["metric"] == metric) & s["method"].isin(cams)].dropna(subset=["mean"])
    order = part.sort_values("mean", ascending=not HIGHER_IS_BETTER.get(metric, True))["method"].tolist()
    return order.index(method) + 1 if method in order else None


def text(summaries: Mapping[str, pd.DataFrame], cams: Sequence[str], metrics: Sequence[str] | None = None,
         method: str = "LIFT-CAM") -> str:
    """Per metric: how far ``Box`` is from ``Uniform`` (the sanity gap the evidence target trains in)
    and ``method``'s rank among ``cams`` under each recipe; then on how many metrics the rank differs."""
    recipes = list(summaries)
    first = summaries[recipes[0]]
    metrics = list(dict.fromkeys(first["metric"])) if metrics is None else list(metrics)
    lines, moved = [], 0
    for metric in metrics:
        cells = []
        ranks = []
        for recipe, s in summaries.items():
            mean = s[s["metric"] == metric].set_index("method")["mean"]
            if mean.empty:
                continue
            gap = (f"Box {mean['Box']:.3g} vs Uniform {mean['Uniform']:.3g}"
                   if {"Box", "Uniform"} <= set(mean.index) else "no sanity rows")
            r = _rank(s, metric, method, cams)
            ranks.append(r)
            cells.append(f"{recipe}: {gap}, {method} rank {r} of {len(cams)}")
        if cells:
            moved += len(set(ranks)) > 1
            lines.append(f"- **{metric}**: " + "; ".join(cells))
    return ("The same images and settings on the default models (`label`: trained on labels only) and on "
            "benchmark v4's (`evidence`: a target computed from the ground-truth boxes); higher is better for "
            "IC, ADD and insertion, lower for AD and deletion.\n\n" + "\n".join(lines)
            + f"\n\n{method}'s rank among the {len(cams)} CAMs differs between the recipes on {moved} of "
            f"{len(lines)} metrics.")
