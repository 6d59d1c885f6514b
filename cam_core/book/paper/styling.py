"""How a :func:`cam_core.book.paper.compare` table looks on a page: decimals, colours, the best in bold."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cam_core.book.paper.tables import DECIMALS
from cam_core.evaluation.reference_maps import SANITY_MAPS
from cam_core.metrics import HIGHER_IS_BETTER


def style(comparison: pd.DataFrame, caption: str | None = None) -> pd.io.formats.style.Styler:
    """A Styler for :func:`compare`'s output: the paper's decimals; the ``difference`` cells
    coloured green where measured is better than the paper, red where worse (by the metric's
    direction), shade by relative size; the best method per column in bold (among the CAMs: the
    sanity maps of :mod:`cam_core.evaluation.reference_maps` are never bold)."""
    metrics = list(dict.fromkeys(comparison.columns.get_level_values(0)))
    sty = comparison.style
    for m in metrics:
        dec = DECIMALS.get(m, 3)
        sty = sty.format(f"{{:.{dec}f}}", subset=[(m, k) for k in ("paper", "measured")], na_rep="–")
        sty = sty.format(f"{{:+.{dec}f}}", subset=[(m, "difference")], na_rep="–")

    def _colour_diff(col: pd.Series) -> list[str]:
        metric = col.name[0]
        sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
        scale = comparison[(metric, "paper")].abs().max()
        scale = scale if np.isfinite(scale) and scale > 0 else col.abs().max()
        out = []
        for v in col:
            if not np.isfinite(v) or not scale:
                out.append("")
                continue
            strength = min(abs(v) / scale, 1.0)
            alpha = 0.15 + 0.6 * strength
            rgb = "46, 160, 67" if sign * v > 0 else "218, 54, 51"
            out.append(f"background-color: rgba({rgb}, {alpha:.2f})")
        return out

    def _bold_best(col: pd.Series) -> list[str]:
        metric = col.name[0]
        higher = HIGHER_IS_BETTER.get(metric, True)
        out = [""] * len(col)
        positions = pd.Series(range(len(col)), index=col.index)
        groups = positions.groupby(level=["dataset", "benchmark"], sort=False)
        for _, pos in groups:
            vals = col.iloc[pos.to_numpy()]
            cams = ~vals.index.get_level_values("method").isin(SANITY_MAPS)
            vals = vals.where(cams)
            if vals.notna().any():
                best = vals.max() if higher else vals.min()
                for p, v in zip(pos.to_numpy(), vals, strict=True):
                    if v == best:
                        out[p] = "font-weight: bold"
        return out

    sty = sty.apply(_colour_diff, subset=[(m, "difference") for m in metrics])
    sty = sty.apply(_bold_best, subset=[(m, k) for m in metrics for k in ("paper", "measured")])
    cap = caption if caption is not None else comparison.attrs.get("caption")
    if cap:
        sty = sty.set_caption(cap)
    return sty
