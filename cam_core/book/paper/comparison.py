"""The paper's tables beside measured numbers: :func:`compare`, and the orderings it implies.

The embedded benchmarks stand in for the paper's columns (``PAPER_COLUMN``): absolute numbers
on a synthetic dataset are not expected to match ImageNet; the *ordering* of the methods is what
can be compared, hence :func:`ranking` (a description: what held is said by paired,
Holm-corrected tests in :mod:`cam_core.book.claims`, never by raw means).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cam_core.book.paper.tables import CAPTIONS, DECIMALS, PAPER_COLUMN, paper_column
from cam_core.book.paper.tables import table as paper_table
from cam_core.evaluation.statistics import kendall_tau as _kendall_tau
from cam_core.metrics import HIGHER_IS_BETTER


def _as_long(measured: pd.DataFrame | Mapping[str, pd.DataFrame], benchmark: str | None) -> pd.DataFrame:
    """Normalise a measured summary to long format ``(benchmark, method, metric, measured)``, plus
    ``ci_low, ci_high`` when the summary has them (:func:`cam_core.evaluation.summarize`).

    Accepted: a long frame with columns ``method, metric, value`` (or ``mean``, as
    ``cc.evaluation.summarize`` gives; plus ``benchmark`` unless
    ``benchmark=`` is given); a wide frame (index = method, columns = metrics) with ``benchmark=``;
    or a mapping ``{benchmark: wide frame}``.
    """
    if isinstance(measured, Mapping):
        parts = [_as_long(df, name) for name, df in measured.items()]
        if not parts:
            raise ValueError("measured is an empty mapping; pass {benchmark: summary}, at least one entry")
        return pd.concat(parts, ignore_index=True)
    if not isinstance(measured, pd.DataFrame):
        raise ValueError(f"measured must be a pandas DataFrame or a mapping of them, "
                         f"got {type(measured).__name__}")
    df = measured
    if "value" not in df.columns and {"method", "metric", "mean"} <= set(df.columns):
        df = df.rename(columns={"mean": "value"})  # cc.evaluation.summarize's long form
    if {"method", "metric", "value"} <= set(df.columns):
        cols = ("benchmark", "method", "metric", "value", "ci_low", "ci_high", "n")
        long = df[[c for c in cols if c in df.columns]].copy()
    else:
        wide = df.copy()
        if "method" in wide.columns:
            wide = wide.set_index("method")
        wide.index.name = "method"
        wide.columns = [str(c) for c in wide.columns]
        long = wide.reset_index().melt(id_vars="method", var_name="metric", value_name="value")
    if benchmark is not None:
        long["benchmark"] = benchmark
    if "benchmark" not in long.columns:
        raise ValueError("cannot tell which benchmark these numbers are from: add a 'benchmark' column "
                         "or pass benchmark='shapes-single' (or a paper column such as 'ImageNet')")
    long = long.rename(columns={"value": "measured"})
    long["measured"] = pd.to_numeric(long["measured"], errors="coerce")
    ci = [c for c in ("ci_low", "ci_high") if c in long.columns]
    long["n"] = pd.to_numeric(long["n"], errors="coerce") if "n" in long.columns else np.nan
    return long[["benchmark", "method", "metric", "measured", *(ci if len(ci) == 2 else []), "n"]]


def _interval(low: float, high: float, decimals: int) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "–"
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def compare(measured: pd.DataFrame | Mapping[str, pd.DataFrame], table: int = 3,
            benchmark: str | None = None) -> pd.DataFrame:
    """The paper's Table ``table`` beside measured numbers.

    Args:
        measured: the measured summary, e.g. ``cc.evaluation.summarize(df)`` (index = method,
            columns = metrics) with ``benchmark=``, a mapping ``{benchmark: summary}``, or a long
            frame with columns ``benchmark, method, metric, value``. Units as the paper's
            (IC, AD, ADD and energy in %).
        table: 1..6.
        benchmark: the benchmark name for a single wide summary (e.g. ``"shapes-single"``).

    Returns:
        index ``(dataset, benchmark, method)`` (``dataset`` = the paper's column), columns a
        MultiIndex ``(metric, kind)`` with kind in ``paper, measured, ci, difference``
        (``difference = measured - paper``; ``ci`` the measured mean's interval as text
        ``"[low, high]"`` at the paper's decimals, present when ``measured`` has ``ci_low, ci_high``,
        as :func:`cam_core.evaluation.summarize` gives). Only metrics the table has and methods that were
        measured are kept; a measured method absent from the paper gets NaN in ``paper``.
    """
    ref = paper_table(table)
    long = _as_long(measured, benchmark)
    long["dataset"] = long["benchmark"].map(paper_column)
    metrics = list(dict.fromkeys(ref["metric"]))
    long = long[long["metric"].isin(metrics)]
    if long.empty:
        raise ValueError(f"none of Table {table}'s metrics ({', '.join(metrics)}) is in the measured summary")
    merged = long.merge(ref.rename(columns={"value": "paper"}), on=["dataset", "method", "metric"],
                        how="left")
    merged["difference"] = merged["measured"] - merged["paper"]
    kinds = ["paper", "measured", "difference"]
    if "ci_low" in merged.columns:
        merged["ci"] = [_interval(lo, hi, DECIMALS.get(m, 3)) for lo, hi, m in
                        zip(merged["ci_low"], merged["ci_high"], merged["metric"], strict=True)]
        kinds = ["paper", "measured", "ci", "difference"]
    wide = merged.set_index(["dataset", "benchmark", "method", "metric"])[kinds].unstack("metric")
    wide = wide.swaplevel(0, 1, axis=1)
    present = [m for m in metrics if m in wide.columns.get_level_values(0)]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([present, kinds], names=["metric", "kind"]))
    for m in present:
        for k in ("paper", "measured", "difference"):
            wide[(m, k)] = pd.to_numeric(wide[(m, k)])
    # rows: paper's dataset order, then the paper's method order, then any extra method
    method_order = list(dict.fromkeys(list(ref["method"]) + list(long["method"])))
    dataset_order = list(dict.fromkeys(list(PAPER_COLUMN.values())))
    keys = sorted(wide.index, key=lambda k: (dataset_order.index(k[0]), k[1], method_order.index(k[2])))
    wide = wide.loc[keys]
    wide = wide.dropna(how="all", subset=[(m, "measured") for m in present])
    wide.attrs["table"] = table
    wide.attrs["caption"] = f"The paper: {CAPTIONS[table]}. This run: {_this_run(long)}."
    return wide


def _this_run(long: pd.DataFrame) -> str:
    """``shapes-single, shapes-multi; 300 images per method and metric``: what was measured, from the
    measured summary (the image counts from its ``n`` column, as ``cc.evaluation.summarize`` gives)."""
    text = ", ".join(dict.fromkeys(long["benchmark"]))
    ns = long["n"].dropna()
    if len(ns):
        lo, hi = int(ns.min()), int(ns.max())
        text += f"; {lo:,} images per method and metric" if lo == hi else f"; {lo:,}-{hi:,} images per method"
    return text


def ranking(comparison: pd.DataFrame, method: str = "LIFT-CAM") -> pd.DataFrame:
    """Per (dataset, benchmark, metric): the best method in the paper and measured here, the rank of
    ``method`` in each (1 = best), and Kendall's tau between the two orderings (methods in both)."""
    rows = []
    for (dataset, bench), block in comparison.groupby(level=["dataset", "benchmark"], sort=False):
        block = block.droplevel(["dataset", "benchmark"])
        for metric in dict.fromkeys(comparison.columns.get_level_values(0)):
            higher = HIGHER_IS_BETTER.get(metric, True)
            paper = block[(metric, "paper")].dropna()
            meas = block[(metric, "measured")].dropna()
            both = paper.index.intersection(meas.index)
            r_paper = paper.rank(ascending=not higher, method="min")
            r_meas = meas.rank(ascending=not higher, method="min")
            rows.append({
                "dataset": dataset, "benchmark": bench, "metric": metric,
                "paper_best": (paper.idxmax() if higher else paper.idxmin()) if len(paper) else None,
                "measured_best": (meas.idxmax() if higher else meas.idxmin()) if len(meas) else None,
                f"{method} rank (paper)": r_paper.get(method, np.nan),
                f"{method} rank (measured)": r_meas.get(method, np.nan),
                "n_measured": len(meas),
                "n_both": len(both),
                "kendall_tau": kendall_tau(paper[both].to_numpy(), meas[both].to_numpy()),
            })
    return pd.DataFrame(rows)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a between two score vectors (NaN for fewer than 2 items; ties count 0):
    :func:`cam_core.evaluation.statistics.kendall_tau` with ``variant="a"``."""
    return _kendall_tau(a, b, variant="a")


def paper_favours(number: int, method: str, other: str, dataset: str | None = None) -> list[str]:
    """The metrics of the paper's Table ``number`` on which ``method``'s reported mean is better than
    ``other``'s (in each metric's direction), on ``dataset`` (default: the table's only dataset). The paper
    gives means without tests: this is what its numbers say, not a verdict (those come from
    :mod:`cam_core.book.claims` on this run's paired tests)."""
    ref = paper_table(number)
    datasets = list(dict.fromkeys(ref["dataset"]))
    if dataset is None:
        if len(datasets) != 1:
            raise ValueError(f"Table {number} has the datasets {', '.join(datasets)}: pass dataset=")
        dataset = datasets[0]
    part = ref[ref["dataset"] == dataset].set_index(["method", "metric"])["value"]
    methods = set(part.index.get_level_values("method"))
    missing = [m for m in (method, other) if m not in methods]
    if missing:
        raise ValueError(f"Table {number} ({dataset}) has no {', '.join(missing)}; its methods are "
                         f"{', '.join(sorted(methods))}")
    out = []
    for metric in dict.fromkeys(part.index.get_level_values("metric")):
        a, b = part.get((method, metric), np.nan), part.get((other, metric), np.nan)
        if np.isfinite(a) and np.isfinite(b) and (a > b if HIGHER_IS_BETTER.get(metric, True) else a < b):
            out.append(metric)
    return out
