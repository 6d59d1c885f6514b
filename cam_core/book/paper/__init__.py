"""The paper's Tables 1-6 as data, and the side-by-side comparison the book shows.

Split by what each part is: :mod:`~cam_core.book.paper.tables` (the paper's numbers and captions),
:mod:`~cam_core.book.paper.comparison` (paper | measured | difference, rankings) and
:mod:`~cam_core.book.paper.styling` (how a comparison looks on a page). The chapters' other helpers
live where they belong and are re-exported here under the names the chapters use:
:mod:`cam_core.book.convergence` (Algorithm 1's error against P) and :mod:`cam_core.plotting`::

    from cam_core import paper
    paper.table(3)                                  # Table 3, long format
    cmp = paper.compare(summary, table=3)           # paper | measured | difference per metric
    paper.paper_favours(6, "LIFT-CAM", "Grad-CAM")  # the metrics on which the paper's means favour LIFT-CAM
    paper.style(cmp)                                # a pandas Styler: "mean [low, high]" cells, best bold
    cc.claims.held(cc.evaluation.paired_table(df, ...))  # what held: paired, Holm-corrected tests
"""
from __future__ import annotations

from cam_core.book.convergence import convergence, loglog_slope, orderings_to_match
from cam_core.book.paper.comparison import compare, kendall_tau, paper_favours, ranking
from cam_core.book.paper.styling import style
from cam_core.book.paper.tables import (
    CAPTIONS,
    COCO,
    DATASETS,
    DECIMALS,
    IMAGENET,
    PAPER_COLUMN,
    TABLES,
    VOC,
    VQA,
    paper_column,
    table,
)
from cam_core.metrics import HIGHER_IS_BETTER
from cam_core.plotting import plot_convergence
from cam_core.plotting import show_explanations as plot_maps

__all__ = [
    "CAPTIONS", "COCO", "DATASETS", "DECIMALS", "HIGHER_IS_BETTER", "IMAGENET", "PAPER_COLUMN", "TABLES",
    "VOC", "VQA", "compare", "convergence", "kendall_tau", "loglog_slope", "orderings_to_match",
    "paper_column", "paper_favours", "plot_convergence", "plot_maps", "ranking", "style", "table",
]
