"""The paper's Tables 1-6 as data, and the side-by-side comparison the book shows.

Numbers are Jung & Oh (ICCV 2021), as restated in ``DIGEST.md``. Every table is a long
DataFrame ``(table, dataset, method, metric, value)``::

    from cam_core import paper
    paper.table(3)                                  # Table 3, long format
    cmp = paper.compare(summary, table=3)           # paper | measured | difference per metric
    paper.style(cmp)                                # a pandas Styler: differences coloured, best bold
    paper.verdict(cmp)                              # markdown: where the paper's ordering held

The embedded benchmarks stand in for the paper's columns (``PAPER_COLUMN``): absolute numbers
on a synthetic dataset are not expected to match ImageNet; the *ordering* of the methods is what
can be compared, hence :func:`ranking` and :func:`verdict`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from cam_core.metrics import HIGHER_IS_BETTER

IMAGENET, VOC, COCO, VQA = "ImageNet", "VOC 2007", "COCO 2014", "VQA v2"
DATASETS = (IMAGENET, VOC, COCO)

#: benchmark name (cc.benchmarks.load) -> the paper's column it stands in for
PAPER_COLUMN: dict[str, str] = {
    "shapes-single": IMAGENET,
    "shapes-multi": VOC,
    "shapes-clutter": COCO,
    "imagenet": IMAGENET,
    "voc2007": VOC,
    "coco2014": COCO,
    "shapes-vqa": VQA,
    "vqa2": VQA,
}


#: decimals the paper prints for each metric (used by :func:`style`)
DECIMALS: dict[str, int] = {"IC": 1, "AD": 2, "ADD": 2, "insertion": 4, "deletion": 4, "energy": 2,
                            "pointing": 1, "cosine": 3, "local_accuracy": 4}

#: the paper's table captions, shortened
CAPTIONS: dict[int, str] = {
    1: "SHAP-CAM_P faithfulness (IC, AD, ADD in %), averaged over 10 runs, VGG16, 1,000 images",
    2: "Cosine similarity of each method's coefficients to SHAP-CAM_10k, VGG16, 500 images",
    3: "Faithfulness of the CAM methods (IC, AD, ADD in %), VGG16, 1,000 images",
    4: "Insertion and deletion AUC, VGG16, ImageNet, 1,000 images",
    5: "Energy-based pointing game (% of the map's energy inside the boxes), VGG16, ImageNet, 1,000 images",
    6: "VQA faithfulness (IC, AD, ADD in %), basic VQA model, VQA v2 validation",
}

_METHODS6 = ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM")


def _rows(table: int, by_method: Mapping[str, Mapping[str, tuple[float, ...]]],
          datasets: tuple[str, ...]) -> list[tuple]:
    return [(table, d, m, metric, float(v))
            for m, metrics in by_method.items()
            for metric, values in metrics.items()
            for d, v in zip(datasets, values, strict=True)]


def _all_tables() -> pd.DataFrame:
    rows: list[tuple] = []
    # Table 1: SHAP-CAM_P, P = 1, 10, 100 (columns ImageNet, VOC, COCO)
    rows += _rows(1, {
        "SHAP-CAM_1": {"IC": (25.9, 37.4, 35.2), "AD": (28.16, 22.93, 23.98), "ADD": (32.64, 17.35, 24.07)},
        "SHAP-CAM_10": {"IC": (26.2, 42.7, 40.1), "AD": (27.54, 17.53, 19.07), "ADD": (32.99, 19.95, 27.50)},
        "SHAP-CAM_100": {"IC": (26.4, 43.6, 41.4), "AD": (27.48, 16.71, 18.27), "ADD": (33.03, 20.64, 27.65)},
    }, DATASETS)
    # Table 2: cosine similarity to SHAP-CAM_10k
    cos = ((.489, .404, .441), (.385, .329, .412), (.406, .327, .350), (.195, .181, .157),
           (.972, .888, .908), (.980, .918, .924))
    rows += _rows(2, {m: {"cosine": v} for m, v in zip(_METHODS6, cos, strict=True)}, DATASETS)
    # Table 3: IC / AD / ADD
    t3 = (
        ((24.0, 32.7, 31.9), (31.89, 30.73, 30.74), (30.60, 17.43, 25.66)),
        ((23.1, 33.8, 33.5), (30.53, 17.20, 20.87), (27.98, 15.85, 24.16)),
        ((25.0, 30.5, 31.3), (31.36, 30.04, 29.92), (30.48, 17.09, 24.95)),
        ((22.8, 29.4, 23.9), (29.91, 17.49, 23.66), (27.52, 14.12, 17.35)),
        ((24.1, 34.4, 35.0), (29.41, 25.49, 23.99), (32.52, 19.42, 26.75)),
        ((25.2, 38.7, 39.3), (29.15, 17.15, 18.65), (32.95, 20.09, 26.34)),
    )
    by3 = {m: dict(zip(("IC", "AD", "ADD"), v, strict=True)) for m, v in zip(_METHODS6, t3, strict=True)}
    rows += _rows(3, by3, DATASETS)
    # Table 4: insertion / deletion AUC, ImageNet only
    t4 = ((.4427, .0891), (.4350, .0969), (.4457, .0883), (.4345, .1002), (.4685, .0873), (.4712, .0866))
    by4 = {m: {"insertion": (v[0],), "deletion": (v[1],)} for m, v in zip(_METHODS6, t4, strict=True)}
    rows += _rows(4, by4, (IMAGENET,))
    # Table 5: energy-based pointing game (%), ImageNet only
    t5 = (47.76, 49.14, 47.91, 51.14, 51.87, 52.43)
    rows += _rows(5, {m: {"energy": (v,)} for m, v in zip(_METHODS6, t5, strict=True)}, (IMAGENET,))
    # Table 6: VQA v2
    rows += _rows(6, {"Grad-CAM": {"IC": (41.95,), "AD": (16.71,), "ADD": (9.09,)},
                      "LIFT-CAM": {"IC": (43.39,), "AD": (14.14,), "ADD": (9.58,)}}, (VQA,))
    return pd.DataFrame(rows, columns=["table", "dataset", "method", "metric", "value"])


TABLES: pd.DataFrame = _all_tables()


def table(number: int) -> pd.DataFrame:
    """The paper's Table ``number`` (1..6), long format: dataset, method, metric, value."""
    if number not in CAPTIONS:
        raise ValueError(f"the paper has Tables 1..6; got table={number!r}")
    out = TABLES[TABLES.table == number].drop(columns="table").reset_index(drop=True)
    out.attrs["caption"] = CAPTIONS[number]
    return out


def paper_column(benchmark: str) -> str:
    """The paper's column a benchmark stands in for: ``"shapes-single"`` -> ``"ImageNet"``.

    A paper column name itself ("ImageNet", ...) is returned unchanged."""
    if benchmark in PAPER_COLUMN.values():
        return benchmark
    if benchmark not in PAPER_COLUMN:
        raise ValueError(f"benchmark {benchmark!r} has no column in the paper's tables; known: "
                         f"{', '.join(PAPER_COLUMN)} (or pass the paper column name itself)")
    return PAPER_COLUMN[benchmark]


def _as_long(measured: pd.DataFrame | Mapping[str, pd.DataFrame], benchmark: str | None) -> pd.DataFrame:
    """Normalise a measured summary to long format ``(benchmark, method, metric, measured)``.

    Accepted: a long frame with columns ``method, metric, value`` (plus ``benchmark`` unless
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
    if {"method", "metric", "value"} <= set(df.columns):
        long = df[[c for c in ("benchmark", "method", "metric", "value") if c in df.columns]].copy()
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
    return long[["benchmark", "method", "metric", "measured"]]


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
        MultiIndex ``(metric, kind)`` with kind in ``paper, measured, difference``
        (``difference = measured - paper``). Only metrics the table has and methods that were
        measured are kept; a measured method absent from the paper gets NaN in ``paper``.
    """
    ref = globals()["table"](table)
    long = _as_long(measured, benchmark)
    long["dataset"] = long["benchmark"].map(paper_column)
    metrics = list(dict.fromkeys(ref["metric"]))
    long = long[long["metric"].isin(metrics)]
    if long.empty:
        raise ValueError(f"none of Table {table}'s metrics ({', '.join(metrics)}) is in the measured summary")
    merged = long.merge(ref.rename(columns={"value": "paper"}), on=["dataset", "method", "metric"],
                        how="left")
    merged["difference"] = merged["measured"] - merged["paper"]
    wide = merged.pivot_table(index=["dataset", "benchmark", "method"], columns="metric",
                              values=["paper", "measured", "difference"], dropna=False, sort=False)
    wide = wide.swaplevel(0, 1, axis=1)
    present = [m for m in metrics if m in wide.columns.get_level_values(0)]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([present, ["paper", "measured", "difference"]],
                                                           names=["metric", "kind"]))
    # rows: paper's dataset order, then the paper's method order, then any extra method
    method_order = list(dict.fromkeys(list(ref["method"]) + list(long["method"])))
    dataset_order = list(dict.fromkeys(list(PAPER_COLUMN.values())))
    keys = sorted(wide.index, key=lambda k: (dataset_order.index(k[0]), k[1], method_order.index(k[2])))
    wide = wide.loc[keys]
    wide = wide.dropna(how="all", subset=[(m, "measured") for m in present])
    wide.attrs["table"] = table
    wide.attrs["caption"] = CAPTIONS[table]
    return wide


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
    """Kendall's tau-a between two score vectors (NaN for fewer than 2 items; ties count 0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, k=1)
    s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s.sum() / len(s))


def verdict(comparison: pd.DataFrame, method: str = "LIFT-CAM") -> str:
    """Markdown sentences, computed from ``comparison``, on whether the paper's ordering held.

    One line per (benchmark, metric): which method is best in the paper and here, where
    ``method`` ranks, and the rank agreement (Kendall's tau) over the methods in both."""
    rk = ranking(comparison, method)
    if rk.empty:
        return "_No measured numbers to compare._"
    lines = []
    for _, r in rk.iterrows():
        rp, rm = r[f"{method} rank (paper)"], r[f"{method} rank (measured)"]
        direction = "higher" if HIGHER_IS_BETTER.get(r.metric, True) else "lower"
        where = f"**{r.metric}** ({direction} is better) on `{r.benchmark}` (paper: {r.dataset})"
        if np.isnan(rm):
            lines.append(f"- {where}: {method} was not measured; best here: {r.measured_best}.")
            continue
        if r.paper_best is None:
            lines.append(f"- {where}: best here **{r.measured_best}**; {method} ranks {int(rm)}; "
                         "the paper has no number for this column.")
            continue
        same = r.measured_best == r.paper_best
        held = "same as the paper" if same else f"the paper's best is {r.paper_best}"
        tau = "n/a" if np.isnan(r.kendall_tau) else f"{r.kendall_tau:+.2f}"
        paper_rank = "" if np.isnan(rp) else f" (in the paper: {int(rp)})"
        lines.append(f"- {where}: best here **{r.measured_best}** ({held}); {method} ranks "
                     f"{int(rm)} of {r.n_measured}{paper_rank}; rank agreement with the paper over "
                     f"{r.n_both} methods, Kendall's tau = {tau}.")
    return "\n".join(lines)


def headline(comparison: pd.DataFrame, method: str = "LIFT-CAM") -> str:
    """One markdown sentence, computed from ``comparison``: on how many columns ``method`` is the best
    (here and in the paper), how often it is in the top two, and the mean rank agreement."""
    rk = ranking(comparison, method)
    here = rk[rk[f"{method} rank (measured)"].notna()]
    if here.empty:
        return f"_{method} was not measured._"
    n = len(here)
    best = int((here["measured_best"] == method).sum())
    top2 = int((here[f"{method} rank (measured)"] <= 2).sum())
    with_paper = here[here["paper_best"].notna()]
    text = f"{method} is the best method on {best} of {n} measured columns and in the top two on {top2}"
    if len(with_paper):
        paper_best = int((with_paper["paper_best"] == method).sum())
        taus = with_paper["kendall_tau"].dropna()
        text += (f"; on the {len(with_paper)} columns the paper reports, "
                 f"it is the paper's best on {paper_best}")
        if len(taus):
            text += f", and the mean rank agreement with the paper is Kendall's tau = {taus.mean():+.2f}"
    return text + "."


def style(comparison: pd.DataFrame, caption: str | None = None) -> pd.io.formats.style.Styler:
    """A Styler for :func:`compare`'s output: the paper's decimals; the ``difference`` cells
    coloured green where measured is better than the paper, red where worse (by the metric's
    direction), shade by relative size; the best method per column in bold."""
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


# ---- convergence of a sampled estimator (Algorithm 1), used by chapters 01 and 02 --------------
def convergence(estimate: Callable[[int, int], torch.Tensor], reference: torch.Tensor,
                orderings: Sequence[int], seeds: Sequence[int]) -> pd.DataFrame:
    """Error of a sampled Shapley estimate against a reference, for each number of orderings and seed.

    Args:
        estimate: ``estimate(P, seed) -> (N, K)`` coefficients, e.g.
            ``lambda p, s: cc.shapley.permutation(head, A, t, n_orderings=p, seed=s)``.
        reference: (N, K), e.g. the exact Shapley values.
    Returns:
        long frame ``orderings, seed, image, rel_error, cosine`` with
        ``rel_error = |phi_P - ref| / |ref|`` and the cosine similarity to ``ref`` per image.
    """
    from cam_core.metrics.similarity import cosine_similarity, relative_error

    ref = reference.detach().double()
    rows = []
    for p in orderings:
        for s in seeds:
            est = estimate(int(p), int(s)).detach().double().to(ref.device)  # (N, K)
            if est.shape != ref.shape:
                raise ValueError(f"estimate returned {tuple(est.shape)}, the reference is {tuple(ref.shape)}")
            rel = relative_error(est, ref).cpu().numpy()
            cos = cosine_similarity(est, ref).cpu().numpy()
            rows += [(int(p), int(s), i, float(r), float(c))
                     for i, (r, c) in enumerate(zip(rel, cos, strict=True))]
    return pd.DataFrame(rows, columns=["orderings", "seed", "image", "rel_error", "cosine"])


def orderings_to_match(curve: pd.DataFrame, error: float) -> int | None:
    """The smallest number of orderings whose mean ``rel_error`` in ``curve`` (from :func:`convergence`)
    is at most ``error`` (e.g. LIFT-CAM's), or None when no P tried comes as close."""
    mean = curve.groupby("orderings")["rel_error"].mean().sort_index()
    return next((int(p) for p, e in mean.items() if e <= error), None)


def loglog_slope(curve: pd.DataFrame, x: str = "orderings", y: str = "rel_error") -> float:
    """Least-squares slope of ``log mean(y)`` against ``log x`` (about -0.5 for an error ~ 1/sqrt(P))."""
    mean = curve.groupby(x)[y].mean()
    mean = mean[mean > 0]
    if len(mean) < 2:
        return float("nan")
    return float(np.polyfit(np.log(mean.index.to_numpy(float)), np.log(mean.to_numpy(float)), 1)[0])


def plot_convergence(curve: pd.DataFrame, ax: Any = None, label: str | None = None) -> Any:
    """Mean relative error against the number of orderings (log-log), with a 1/sqrt(P) guide."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.4))
    stats = curve.groupby("orderings")["rel_error"].agg(["mean", "std"])
    p = stats.index.to_numpy(float)
    ax.errorbar(p, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label or "measured")
    guide = stats["mean"].iloc[0] * np.sqrt(p[0] / p)
    ax.plot(p, guide, "k--", lw=1, label=r"$\propto 1/\sqrt{P}$")
    ax.set(xscale="log", yscale="log", xlabel="orderings P", ylabel="relative error")
    ax.legend(frameon=False)
    return ax.figure


def plot_maps(x: torch.Tensor, maps: Mapping[str, torch.Tensor], boxes: Sequence[torch.Tensor] | None = None,
              titles: Sequence[str] | None = None, mean: torch.Tensor | None = None,
              std: torch.Tensor | None = None, alpha: float = 0.5, cmap: str = "jet") -> Any:
    """The paper's Figure 3 layout: one row per image, the image then each method's map over it.

    A thin alias of :func:`cam_core.plotting.show_explanations` (the one implementation).

    Args:
        x: (N, C, H, W) images in the model's input space (un-normalised with ``mean``/``std``).
        maps: method name -> (N, H, W) saliency in [0, 1].
        boxes: N tensors (M_i, 4) of ``x0, y0, x1, y1`` pixel boxes, drawn on every panel.
        titles: N row labels (e.g. the explained class).
    """
    from cam_core.plotting import show_explanations

    return show_explanations(x, maps, boxes=boxes, titles=titles, alpha=alpha, cmap=cmap, mean=mean, std=std)
