"""How a :func:`cam_core.book.paper.compare` table looks on a page: per metric the paper's number and
the measured mean with its interval in one cell, the best method in bold, no colours, no wrapping."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cam_core.book.paper.tables import DECIMALS
from cam_core.evaluation.reference_maps import SANITY_MAPS
from cam_core.metrics import HIGHER_IS_BETTER

#: the column headers of the two numbers shown per metric
PAPER, MEASURED = "paper", "this run"
#: CSS of the table: cells never wrap ("[0.0, 0.0]" and "Grad-CAM" stay on one line), a smaller font
TABLE_STYLES = [
    {"selector": "th, td", "props": [("white-space", "nowrap"), ("padding", "0.15em 0.45em")]},
    {"selector": "", "props": [("font-size", "0.8rem")]},
]


def _number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}" if np.isfinite(value) else "–"


def cells(comparison: pd.DataFrame) -> pd.DataFrame:
    """The text a page shows for :func:`compare`'s output: per metric ``paper`` (at the paper's decimals)
    and ``this run``, ``"mean [low, high]"`` (the measured mean and its 95% interval over images, when
    ``compare`` had them). No ``difference`` column: a synthetic benchmark's number and the paper's
    ImageNet / VOC / COCO number are not the same quantity, so their gap is neither a gain nor a loss;
    the orderings are what compare (:func:`cam_core.book.paper.ranking`, :mod:`cam_core.book.claims`)."""
    metrics = list(dict.fromkeys(comparison.columns.get_level_values(0)))
    out = {}
    for m in metrics:
        dec = DECIMALS.get(m, 3)
        out[(m, PAPER)] = [_number(v, dec) for v in comparison[(m, "paper")]]
        measured = [_number(v, dec) for v in comparison[(m, "measured")]]
        if (m, "ci") in comparison.columns:
            measured = [f"{v} {ci}" if v != "–" and isinstance(ci, str) and ci != "–" else v
                        for v, ci in zip(measured, comparison[(m, "ci")], strict=True)]
        out[(m, MEASURED)] = measured
    shown = pd.DataFrame(out, index=comparison.index)
    shown.columns = pd.MultiIndex.from_tuples(list(out), names=["metric", ""])
    return shown


def _best(comparison: pd.DataFrame, metric: str, kind: str) -> list[bool]:
    """Per row: whether it is the best CAM of its (dataset, benchmark) block on ``metric`` (the sanity
    maps of :mod:`cam_core.evaluation.reference_maps` are never best)."""
    col = comparison[(metric, kind)]
    higher = HIGHER_IS_BETTER.get(metric, True)
    out = [False] * len(col)
    positions = pd.Series(range(len(col)), index=col.index)
    for _, pos in positions.groupby(level=["dataset", "benchmark"], sort=False):
        vals = col.iloc[pos.to_numpy()]
        vals = vals.where(~vals.index.get_level_values("method").isin(SANITY_MAPS))
        if vals.notna().any():
            best = vals.max() if higher else vals.min()
            for p, v in zip(pos.to_numpy(), vals, strict=True):
                out[p] = bool(v == best)
    return out


def style(comparison: pd.DataFrame, caption: str | None = None) -> pd.io.formats.style.Styler:
    """A Styler for :func:`compare`'s output: :func:`cells` (the paper's number, then this run's
    ``"mean [low, high]"``), the best method per column in bold (among the CAMs), no colours, cells that
    do not wrap, in a smaller font so that the table fits the page."""
    shown = cells(comparison)
    bold = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for m in dict.fromkeys(comparison.columns.get_level_values(0)):
        for kind, header in (("paper", PAPER), ("measured", MEASURED)):
            bold[(m, header)] = ["font-weight: bold" if b else "" for b in _best(comparison, m, kind)]
    sty = shown.style.apply(lambda _: bold, axis=None).set_table_styles(TABLE_STYLES)
    cap = caption if caption is not None else comparison.attrs.get("caption")
    if cap:
        sty = sty.set_caption(cap)
    return sty
