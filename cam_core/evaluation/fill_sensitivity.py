r"""Do the verdicts depend on what a removed pixel becomes? (issue 20, item 3)

The paper does not say what insertion / deletion put in place of a removed pixel. One call runs
the same evaluation under each fill of :data:`cam_core.metrics.BASELINES` (black, each image's mean
colour, a blurred copy, ROAD's noisy linear imputation) and reports, per fill and metric, the paired
verdict of one method against each other method (Holm-corrected within the fill) and how well the
methods' order agrees with the black fill's (Kendall's tau of the methods' means)::

    table = cc.fill_sensitivity.fill_table(bench, n_images=60)
    # fill, metric, one verdict column per other method, tau_vs_zero, then the means
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from cam_core.evaluation.statistics import kendall_tau  # noqa: F401  (re-exported: the tau of the table)
from cam_core.metrics import BASELINES

#: the verdicts as the table prints them
SYMBOL = {"better": "better", "worse": "worse", "indistinguishable": "≈"}


def fill_runs(bench: Any, methods: Sequence[str] | None = None, fills: Sequence[str] = BASELINES,
              n_images: int = 60, seed: int = 0, *, metrics: Sequence[str] = ("insertion", "deletion"),
              steps: int = 20, batch_size: int = 16, cache: Any = True) -> pd.DataFrame:
    """``cc.evaluate`` once per fill (cached like any run): one tidy frame with a ``fill`` column.

    ``bench`` may be a list of one benchmark's independently trained models
    (:func:`cam_core.benchmarks.load_seeds`): each is evaluated on the same images and the frame gets a
    ``model_seed`` column, so that :func:`fill_table`'s verdicts resample the models, then the images."""
    from cam_core.evaluation.runner import evaluate
    from cam_core.methods.registry import PAPER_METHODS

    methods = list(PAPER_METHODS if methods is None else methods)
    benches = list(bench) if isinstance(bench, (list, tuple)) else [bench]
    parts = [evaluate(b, methods=methods, metrics=list(metrics), n_images=n_images, seed=seed, cache=cache,
                      batch_size=batch_size, progress=False, baseline=fill, steps=steps).assign(fill=fill)
             .assign(**({"model_seed": getattr(b, "model_seed", k)} if len(benches) > 1 else {}))
             for k, b in enumerate(benches) for fill in fills]
    return pd.concat(parts, ignore_index=True)


def fill_table(runs: pd.DataFrame, method: str = "LIFT-CAM", reference: str = "zero", seed: int = 0,
               alpha: float = 0.05) -> pd.DataFrame:
    """Per fill and metric: ``method``'s verdict against each other method (paired test, Holm within the
    fill's comparisons: ``better`` / ``worse`` / ``≈``), ``tau_vs_<reference>`` (Kendall's tau of the
    methods' mean order with the ``reference`` fill's on that metric) and ``rank`` (the method's place
    among all, 1 = best, by the metric's direction). With a ``model_seed`` column (several trained models)
    the means average the models' means and the verdicts are hierarchical (models, then images;
    :func:`cam_core.evaluation.statistics.paired`)."""
    from cam_core.metrics import HIGHER_IS_BETTER
    from cam_core.evaluation.statistics import paired_table

    if "fill" not in runs.columns:
        raise ValueError("runs needs a fill column: pass fill_runs(...)'s frame")
    keys = ["fill", "metric", "method"]
    if "model_seed" in runs.columns:  # each trained model weighs the same, as in summarize and paired
        means = runs.groupby([*keys, "model_seed"])["value"].mean().groupby(level=keys).mean().sort_index()
    else:
        means = runs.groupby(keys)["value"].mean().sort_index()
    rows = []
    for fill, part in runs.groupby("fill", sort=False):
        pairs = paired_table(part.drop(columns="fill"), method, seed=seed, alpha=alpha)
        for metric, p in pairs.groupby("metric", sort=False):
            m = means.loc[(fill, metric)]
            ref = means.loc[(reference, metric)] if (reference, metric) in means.index else None
            common = [k for k in m.index if ref is not None and k in ref.index]
            tau = kendall_tau(m[common], ref[common]) if len(common) >= 2 else float("nan")
            ordered = m.sort_values(ascending=not HIGHER_IS_BETTER.get(metric, True))
            row = {"fill": fill, "metric": metric,
                   **{r.b: SYMBOL[r.verdict] for r in p.itertuples()},
                   f"tau_vs_{reference}": tau, "rank": int(list(ordered.index).index(method)) + 1,
                   "better_than": int((p["verdict"] == "better").sum()), "of": len(p)}
            rows.append(row)
    return pd.DataFrame(rows)


#: the book's fill-sensitivity run: chapters 04 and 07 ask for exactly this, so the second reads the first's
#: cached per-image results (cc.evaluate's cache); sizes by where it runs
BOOK_RUN: dict[str, Any] = {"benchmark": "shapes-clutter",
                            "cpu": {"n_images": 60, "steps": 10}, "cuda": {"n_images": 1000, "steps": 40},
                            "smoke": {"n_images": 4, "steps": 4}}


def book_table(device: Any = "auto", smoke: bool = False, seed: int = 0, arch: str = "vgg",
               bench: Any = None, model_seeds: Sequence[int] | str | None = None) -> pd.DataFrame:
    """The fill-sensitivity table of chapters 04 and 07 in one call: :data:`BOOK_RUN`'s benchmark (or
    ``bench``'s), every trained model of it that the repository ships (``model_seeds``, None: all of them;
    one with ``smoke``), the paper's six methods, every fill, LIFT-CAM against the other five
    (:func:`fill_table`). ``attrs``: ``benchmark``, ``n_images``, ``steps``, ``model_seeds``."""
    from cam_core.benchmarks import load_seeds
    from cam_core.runtime import resolve_device

    dev = resolve_device(device)
    name = BOOK_RUN["benchmark"] if bench is None else bench.name
    recipe = getattr(bench, "recipe", None)
    seeds = "0" if smoke and model_seeds is None else model_seeds
    benches = load_seeds(name, model_seeds=seeds, arch=arch, device=dev,
                         **({"recipe": recipe} if recipe else {}))
    if bench is not None:  # the caller's loaded model stands for its own seed
        own = getattr(bench, "model_seed", 0)
        benches = [bench if getattr(b, "model_seed", 0) == own else b for b in benches]
    sizes = BOOK_RUN["smoke" if smoke else ("cuda" if dev.type == "cuda" else "cpu")]
    runs = fill_runs(benches, n_images=sizes["n_images"], steps=sizes["steps"], seed=seed)
    table = fill_table(runs, seed=seed)
    table.attrs.update(benchmark=name, model_seeds=[getattr(b, "model_seed", 0) for b in benches], **sizes)
    return table
