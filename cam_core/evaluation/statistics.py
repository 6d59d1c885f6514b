r"""Uncertainty of the tables' numbers: bootstrap intervals, paired tests, Holm's correction.

Every number of the paper's Tables 2-5 is a mean over images. Here each gets an interval, and
"method A is better than B" becomes a paired test over the same images::

    df = cc.evaluate(bench, methods=cc.PAPER_METHODS, n_images=300)
    cc.evaluation.summarize(df)                           # method, metric, mean, ci_low, ci_high, n, n_nan
    cc.evaluation.paired(df, "AD", "LIFT-CAM", "Grad-CAM")  # difference a - b, its CI, a p-value
    cc.evaluation.paired_table(df, "LIFT-CAM")            # LIFT-CAM vs every other method, Holm-corrected

- Intervals are percentile bootstraps over images (``n_boot`` resamples of the images with
  replacement), seeded: the same ``seed`` gives the same interval, and each (method, metric) cell
  draws from its own stream derived from ``seed`` and the cell's names, so a cell's interval does not
  depend on which other methods are in the frame.
- :func:`paired` compares two methods on the images both have a value for. For a 0/1 metric (IC's
  indicator, the hit/miss pointing game) the p-value is McNemar's exact test: under "no difference"
  each discordant image (one method 1, the other 0) is a fair coin, so the count of images where
  ``a`` wins is Binomial(discordant, 1/2). For any other metric it is a sign-flip permutation test
  of the mean difference (under "no difference" each paired difference is as likely to have
  either sign), with ``n_resamples`` random sign patterns and the ``(1 + hits) / (1 + n_resamples)``
  estimate, which is never 0. The interval of the difference is a paired bootstrap either way.
- :func:`holm` adjusts a family of p-values (Holm, 1979), which :func:`paired_table` applies across
  every comparison of one table (all benchmarks, metrics and methods it holds).
- 0/1 metrics (IC's indicator, the hit pointing game; :data:`BINARY_METRICS`) get the exact
  Clopper-Pearson interval of a binomial proportion in :func:`summarize`, not a bootstrap: the
  bootstrap of 0 hits in 300 is ``[0, 0]`` (it covers a true rate of 0.3 % only 59 % of the time),
  Clopper-Pearson's is ``[0, 1.2]`` % and covers at least 95 % for every rate.
- Several trained models (issue 20): a frame with a ``model_seed`` column holds one model per seed
  on the same images. :func:`summarize` and :func:`paired` then resample at two levels, seeds
  with replacement and then images with replacement within each drawn seed (a hierarchical
  bootstrap), so the interval covers the spread between training runs, not only between images;
  :func:`seed_variance` says how much of a cell's variance is between seeds.

Units follow :data:`cam_core.evaluation.SCALE`: IC/AD/ADD/energy/pointing in %, AUCs plain.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from cam_core.metrics import HIGHER_IS_BETTER

#: the metrics whose per-image values are 0/1 indicators (McNemar's exact test in :func:`paired`)
BINARY_METRICS: frozenset[str] = frozenset({"IC", "pointing"})
_CHUNK = 500  # resamples drawn at once (bounds memory at _CHUNK x n_images)


def _scale(metric: str) -> float:
    from cam_core.metrics import SCALE

    return SCALE.get(metric, 1.0)


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator for one cell: ``seed`` plus a stable hash of its names (order of cells irrelevant)."""
    return np.random.default_rng([int(seed), *(zlib.crc32(n.encode()) for n in names)])


def _check_ci(ci: float) -> None:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a coverage in (0, 1), e.g. 0.95; got {ci!r}")


def bootstrap_ci(values: np.ndarray, ci: float = 0.95, n_boot: int = 2000, seed: int | np.random.Generator = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D, no NaN): ``(low, high)``.

    NaN for an empty sample; ``(v, v)`` for a single value (nothing to resample)."""
    _check_ci(ci)
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    means = np.concatenate([v[rng.integers(0, v.size, (min(_CHUNK, n_boot - i), v.size))].mean(axis=1)
                            for i in range(0, n_boot, _CHUNK)])
    tail = (1 - ci) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """``P[X <= k]`` for ``X ~ Binomial(n, p)``, summed in log space (exact up to float rounding)."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    i = np.arange(k + 1)
    logs = (math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
            + i * math.log(p) + (n - i) * math.log1p(-p))
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def _solve_decreasing(f, target: float) -> float:
    """The ``p`` in [0, 1] where the decreasing ``f(p)`` crosses ``target`` (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion: ``k`` successes in ``n`` trials.

    ``low`` solves ``P[X >= k | low] = (1 - ci)/2`` (0 when k = 0), ``high`` solves
    ``P[X <= k | high] = (1 - ci)/2`` (1 when k = n); coverage is at least ``ci`` for every true rate.
    NaN for n = 0."""
    _check_ci(ci)
    k, n = int(k), int(n)
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in 0..n, got k={k}, n={n}")
    tail = (1 - ci) / 2
    low = 0.0 if k == 0 else 1.0 - _solve_decreasing(lambda q: _binom_cdf(n - k, n, q), tail)  # by symmetry
    high = 1.0 if k == n else _solve_decreasing(lambda p: _binom_cdf(k, n, p), tail)
    return low, high


def _is_binary(metric: str, values: np.ndarray) -> bool:
    return metric in BINARY_METRICS and values.size > 0 and bool(np.isin(values, (0.0, 1.0)).all())


def hierarchical_bootstrap(groups: Sequence[np.ndarray], n_boot: int = 2000,
                           seed: int | np.random.Generator = 0) -> np.ndarray:
    """``n_boot`` bootstrap means of a two-level sample: draw ``len(groups)`` groups (model seeds) with
    replacement, then within each drawn group its values (images) with replacement, and average the
    drawn groups' means (each seed weighs the same). A group drawn twice gets two independent image
    resamples. Returns the (n_boot,) means."""
    gs = [np.asarray(g, dtype=float).reshape(-1) for g in groups]
    gs = [g for g in gs if g.size]
    if not gs:
        return np.full(n_boot, np.nan)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    k = len(gs)
    pick = rng.integers(0, k, (n_boot, k))  # (B, S) which seed fills each slot
    means = np.empty((n_boot, k))
    for j, g in enumerate(gs):
        where = np.nonzero(pick == j)
        m = where[0].size
        draws = np.concatenate([g[rng.integers(0, g.size, (min(_CHUNK, m - i), g.size))].mean(axis=1)
                                for i in range(0, m, _CHUNK)]) if m else np.empty(0)
        means[where] = draws
    return means.mean(axis=1)


def _percentile(means: np.ndarray, ci: float) -> tuple[float, float]:
    tail = (1 - ci) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def seed_variance(df: pd.DataFrame) -> pd.DataFrame:
    """How much of each cell's spread is between trained models (``model_seed``), per method and metric.

    One-way random-effects variance components over seeds (method of moments, Searle et al. 1992):
    ``var_between`` (of the per-seed means, net of image noise; 0 when negative) and
    ``var_within`` (between images of one model). ``share_between = var_between / (var_between +
    var_within)`` is the share of one image's variance that is the model's (the intraclass
    correlation); ``share_of_mean`` is the share of the variance *of the table's mean* (``var_between / S
    + var_within / (S n)``) that comes from the seeds, i.e. how much of the interval the seeds make.
    In the table's units (x SCALE). Needs a ``model_seed`` column."""
    if "model_seed" not in df.columns:
        raise ValueError("df has no model_seed column: concatenate the frames of the models trained with "
                         "different seeds, each with .assign(model_seed=k)")
    keys = [c for c in ("benchmark", "arch", "orderings", "run") if c in df.columns] + ["method", "metric"]
    rows = []
    for cell, g in df.dropna(subset=["value"]).groupby(keys, sort=False):
        scale = _scale(cell[-1])
        groups = [v["value"].to_numpy(float) * scale for _, v in g.groupby("model_seed", sort=True)]
        n_seeds = len(groups)
        sizes = np.array([x.size for x in groups], float)
        means = np.array([x.mean() for x in groups])
        within = (float(sum(((x - x.mean()) ** 2).sum() for x in groups) / max(1.0, sizes.sum() - n_seeds))
                  if sizes.sum() > n_seeds else float("nan"))
        n0 = (sizes.sum() - (sizes**2).sum() / sizes.sum()) / max(1, n_seeds - 1)  # the average group size
        msb = float((sizes * (means - np.average(means, weights=sizes)) ** 2).sum() / (n_seeds - 1)) \
            if n_seeds > 1 else float("nan")
        between = max(0.0, (msb - within) / n0) if n_seeds > 1 and np.isfinite(within) else float("nan")
        total = between + within
        of_mean = between / n_seeds + within / sizes.sum()
        rows.append((*cell, n_seeds, int(sizes.sum()), between, within,
                     between / total if total > 0 else 0.0,
                     (between / n_seeds) / of_mean if of_mean > 0 else 0.0))
    return pd.DataFrame(rows, columns=[*keys, "n_seeds", "n", "var_between", "var_within", "share_between",
                                       "share_of_mean"])


def summarize(df: pd.DataFrame, ci: float | None = 0.95, seed: int = 0, *, wide: bool = False,
              n_boot: int = 2000) -> pd.DataFrame:
    """The tables' aggregates with bootstrap intervals, per method and metric.

    ``mean = SCALE[metric] * mean over images`` (NaN skipped: IC = % of images whose confidence rose,
    AD / ADD / energy in %, pointing = % hits, AUCs, local_accuracy and cosine plain), its percentile
    bootstrap interval over images (``ci_low``, ``ci_high``; ``ci=None`` skips the bootstrap and leaves
    them NaN), ``n`` images with a value and ``n_nan`` without one (e.g. no box of the target class).
    A 0/1 metric (IC, pointing: values all 0 or 1) gets the exact Clopper-Pearson interval instead.

    With a ``model_seed`` column (one trained model per seed, each on the images): the mean is the
    average of the per-seed means, the interval a hierarchical bootstrap (seeds, then images within
    each seed; :func:`hierarchical_bootstrap`; for a 0/1 metric the wider of it and the exact interval
    of the pooled count), and the extra columns ``n_seeds`` and ``seed_share`` (the share of the mean's
    variance that is between seeds, :func:`seed_variance`) follow ``n_nan``.

    Args:
        df: :func:`cam_core.evaluation.evaluate`'s tidy frame (``image, method, metric, value``); any
            other columns among ``benchmark, arch, orderings, run`` are kept as extra group keys.
        ci: the interval's coverage (0.95 = 95%), or None.
        seed: the bootstrap's seed (same seed, same intervals).
        wide: True gives the old methods x metrics table of means (rows and columns in the order they
            first appear), without intervals.
        n_boot: bootstrap resamples per cell.

    Returns:
        long: ``[extra keys..., method, metric, mean, ci_low, ci_high, n, n_nan]``, cells in order of
        first appearance; wide: see above.
    """
    if ci is not None:
        _check_ci(ci)
    if df.empty:
        return pd.DataFrame()
    missing = {"method", "metric", "value"} - set(df.columns)
    if missing:
        raise ValueError(f"df lacks the columns {sorted(missing)}: pass cc.evaluate's tidy frame "
                         "(image, method, metric, value)")
    keys = [c for c in ("benchmark", "arch", "orderings", "run") if c in df.columns] + ["method", "metric"]
    seeded = "model_seed" in df.columns
    shares = {}
    if seeded:
        sv = seed_variance(df)
        shares = {tuple(r[:-6]): r[-1] for r in sv.itertuples(index=False)}
    rows = []
    for cell, g in df.groupby(keys, sort=False, dropna=False):
        vals = g["value"].to_numpy(float)
        nan_mask = np.isnan(vals)
        ok = vals[~nan_mask]
        scale = _scale(cell[-1])
        rng = _rng(seed, *map(str, cell))
        low = high = float("nan")
        if not seeded:
            mean = float(ok.mean() * scale) if ok.size else float("nan")
            if ci is not None and _is_binary(cell[-1], ok):
                low, high = (scale * b for b in clopper_pearson(int(ok.sum()), ok.size, ci))
            elif ci is not None and ok.size:
                low, high = bootstrap_ci(ok * scale, ci, n_boot, rng)
            rows.append((*cell, mean, low, high, int(ok.size), int(vals.size - ok.size)))
            continue
        groups = [v[~np.isnan(v)] * scale for _, v in
                  g.assign(value=vals).groupby("model_seed", sort=True)["value"].apply(np.asarray).items()]
        groups = [v for v in groups if v.size]
        mean = float(np.mean([v.mean() for v in groups])) if groups else float("nan")
        if ci is not None and groups:
            low, high = _percentile(hierarchical_bootstrap(groups, n_boot, rng), ci)
            if _is_binary(cell[-1], ok):
                lo, hi = (scale * b for b in clopper_pearson(int(ok.sum()), ok.size, ci))
                low, high = min(low, lo), max(high, hi)
        rows.append((*cell, mean, low, high, int(ok.size), int(vals.size - ok.size), len(groups),
                     float(shares.get(tuple(cell), float("nan")))))
    extra = ["n_seeds", "seed_share"] if seeded else []
    long = pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n", "n_nan", *extra])
    if not wide:
        return long
    if len(keys) > 2:
        raise ValueError(f"wide=True needs one run per method (no {keys[:-2]} column); use the long form")
    methods = list(dict.fromkeys(df["method"]))
    metrics = list(dict.fromkeys(df["metric"]))
    out = long.pivot(index="method", columns="metric", values="mean").reindex(index=methods, columns=metrics)
    out.columns.name = None
    return out


def with_ci(mean: pd.Series, low: pd.Series, high: pd.Series, fmt: str = ".2f") -> pd.Series:
    """Text cells ``"mean [low, high]"`` (``"mean"`` where the interval is NaN, "–" where the mean is)."""
    def cell(m: float, lo: float, hi: float) -> str:
        if not np.isfinite(m):
            return "–"
        return f"{m:{fmt}}" + (f" [{lo:{fmt}}, {hi:{fmt}}]" if np.isfinite(lo) and np.isfinite(hi) else "")

    return pd.Series([cell(*v) for v in zip(mean, low, high, strict=True)], index=mean.index, dtype=object)


def ci_table(summary: pd.DataFrame, metric: str, index: str = "method", columns: str = "benchmark",
             fmt: str = ".2f") -> pd.DataFrame:
    """One metric of a long :func:`summarize` frame as a wide table of text cells ``"mean [ci_low, ci_high]"``
    (rows ``index``, columns ``columns``, in order of first appearance; "–" where nothing was measured;
    numbers in the format spec ``fmt``, e.g. ``".1f"`` or ``".3g"``)."""
    part = summary[summary["metric"] == metric]
    if part.empty:
        raise ValueError(f"no {metric!r} rows in summary; metrics: {list(dict.fromkeys(summary['metric']))}")
    text = part.assign(cell=with_ci(part["mean"], part["ci_low"], part["ci_high"], fmt))
    out = text.pivot(index=index, columns=columns, values="cell")
    out = out.reindex(index=list(dict.fromkeys(part[index])), columns=list(dict.fromkeys(part[columns])))
    return out.fillna("–")


# ---- paired comparisons ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    """One paired comparison ``a - b`` on ``metric`` (in the table's units)."""

    metric: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    test: str  # "mcnemar-exact", "sign-flip" or (with model seeds) "hierarchical-bootstrap"

    def as_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes: ``min(1, 2 P[X <= min(n10, n01)])``
    with ``X ~ Binomial(n10 + n01, 1/2)``, ``n10`` = images where ``a`` is 1 and ``b`` is 0; 1.0 when
    no image is discordant."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def sign_flip_p(d: np.ndarray, n_resamples: int = 10000, seed: int | np.random.Generator = 0) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(d) = 0`` for paired differences ``d``:
    ``(1 + #{|mean(s d)| >= |mean(d)|}) / (1 + n_resamples)`` over random signs ``s``."""
    d = np.asarray(d, dtype=float).reshape(-1)
    if d.size == 0:
        return float("nan")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    observed = abs(d.mean()) * (1 - 1e-12)  # ties with the observed value count as extreme
    hits = 0
    for i in range(0, n_resamples, _CHUNK):
        signs = rng.integers(0, 2, (min(_CHUNK, n_resamples - i), d.size)) * 2 - 1
        hits += int((np.abs(signs @ d) / d.size >= observed).sum())
    return (1 + hits) / (1 + n_resamples)


def _pair_values(df: pd.DataFrame, metric: str, a: str, b: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Paired values of ``a`` and ``b`` (images both have), and each pair's ``model_seed`` (or None)."""
    sub = df[(df["metric"] == metric) & df["method"].isin([a, b])]
    for m in (a, b):
        if not (sub["method"] == m).any():
            have = sorted(df.loc[df["metric"] == metric, "method"].unique())
            raise ValueError(f"no {metric!r} values for method {m!r} in df; methods with {metric!r}: {have}")
    index = ["model_seed", "image"] if "model_seed" in sub.columns else ["image"]
    if sub.duplicated([*index, "method"]).any():
        raise ValueError(f"several {metric!r} values per image and method: pass one run's frame "
                         "(filter by benchmark / arch first; several trained models: a model_seed column)")
    wide = sub.pivot(index=index, columns="method", values="value").dropna()
    seeds = wide.index.get_level_values("model_seed").to_numpy() if len(index) == 2 else None
    return wide[a].to_numpy(float), wide[b].to_numpy(float), seeds


def paired(df: pd.DataFrame, metric: str, a: str, b: str, seed: int = 0, *, ci: float = 0.95,
           n_boot: int = 2000, n_resamples: int = 10000) -> Paired:
    """The paired difference ``a - b`` of ``metric`` over the images both methods have a value for.

    ``difference`` is in the table's units (x100 for the % metrics), with its paired-bootstrap
    interval and a two-sided p-value: McNemar's exact test for the 0/1 metrics (:data:`BINARY_METRICS`),
    a sign-flip permutation test otherwise (module docstring). Whether the difference favours ``a``
    depends on the metric's direction (:data:`cam_core.metrics.HIGHER_IS_BETTER`).

    With a ``model_seed`` column (several trained models on the same images) the pairs are
    (seed, image); the means are averages of per-seed means, the interval a hierarchical bootstrap
    of the mean difference (seeds, then images within each seed) and the p-value the bootstrap's
    two-sided ``2 (1 + #{resamples on the other side of 0}) / (1 + B)``, ``B = max(n_boot, n_resamples)`` (``test`` =
    ``"hierarchical-bootstrap"``): a difference must hold across the models, not in one.
    """
    _check_ci(ci)
    va, vb, seeds = _pair_values(df, metric, a, b)
    scale = _scale(metric)
    d = (va - vb) * scale
    rng = _rng(seed, metric, a, b)
    binary = metric in BINARY_METRICS and bool(np.isin(np.concatenate([va, vb]), (0.0, 1.0)).all())
    nan = float("nan")
    low = high = p = nan
    if seeds is not None:
        groups = [np.flatnonzero(seeds == k) for k in np.unique(seeds)]

        def mean_of(v: np.ndarray) -> float:
            return float(np.mean([v[g].mean() for g in groups])) if v.size else nan

        if d.size:
            # max(n_boot, n_resamples) resamples: the p-value cannot go below 2 / (1 + B), and with B = 2000
            # Holm over a chapter's 30-105 comparisons could not call anything significant
            n_p = max(n_boot, n_resamples)
            boot = hierarchical_bootstrap([d[g] for g in groups], n_p, rng)
            low, high = _percentile(boot, ci)
            observed = mean_of(d)
            other = (boot <= 0).sum() if observed > 0 else (boot >= 0).sum() if observed < 0 else n_p
            p = min(1.0, 2 * (1 + int(other)) / (1 + n_p))
        return Paired(metric, a, b, mean_of(va * scale), mean_of(vb * scale), mean_of(d), low, high, float(p),
                      int(d.size), "hierarchical-bootstrap")
    if d.size:
        low, high = bootstrap_ci(d, ci, n_boot, rng)
        p = mcnemar_exact(va > 0.5, vb > 0.5) if binary else sign_flip_p(d, n_resamples, rng)
    return Paired(metric, a, b, float(va.mean() * scale) if d.size else nan,
                  float(vb.mean() * scale) if d.size else nan, float(d.mean()) if d.size else nan,
                  low, high, float(p), int(d.size), "mcnemar-exact" if binary else "sign-flip")


def kendall_tau(a: Sequence[float], b: Sequence[float], *, variant: str = "b") -> float:
    """Kendall's rank correlation of two equally long score sequences: ``variant="b"`` (tau-b, ties counted
    as neither concordant nor discordant and left out of the denominator) or ``"a"`` (tau-a, every pair in
    the denominator). NaN for fewer than 2 items, or (tau-b) when one sequence is all ties."""
    x, y = np.asarray(a, float).reshape(-1), np.asarray(b, float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"need two sequences of one length; got {x.size} and {y.size}")
    if variant not in ("a", "b"):
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    if x.size < 2:
        return float("nan")
    i, j = np.triu_indices(x.size, 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    den = float(i.size) if variant == "a" else float(np.sqrt((dx != 0).sum() * (dy != 0).sum()))
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm, 1979), in the input's order.

    With the ``m`` p-values sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``;
    rejecting where the adjusted value is ``<= alpha`` controls the family-wise error at ``alpha``.
    NaN entries stay NaN and do not count in ``m``."""
    p = np.asarray(p_values, dtype=float).reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1]; got {p[ok].min()} .. {p[ok].max()}")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def verdict(difference: float, p_holm: float, metric: str, alpha: float = 0.05) -> str:
    """``"better"`` / ``"worse"`` (for the first method of the pair, by the metric's direction) when the
    Holm-adjusted p-value is at most ``alpha``, else ``"indistinguishable"``."""
    if not (np.isfinite(p_holm) and p_holm <= alpha and difference != 0):
        return "indistinguishable"
    higher = HIGHER_IS_BETTER.get(metric, True)
    return "better" if (difference > 0) == higher else "worse"


def paired_table(df: pd.DataFrame | Mapping[str, pd.DataFrame], method: str = "LIFT-CAM",
                 others: Sequence[str] | None = None, metrics: Sequence[str] | None = None, seed: int = 0,
                 *, alpha: float = 0.05, ci: float = 0.95, n_boot: int = 2000,
                 n_resamples: int = 10000) -> pd.DataFrame:
    """``method`` against every other method on every metric of one table, Holm-corrected across it.

    Args:
        df: one run's tidy frame, a frame with a ``benchmark`` column, or ``{benchmark: frame}``.
        others: the methods compared with (default: all others in the frame, first-seen order).
        metrics: default: every metric in the frame.
        alpha: the family-wise error rate of the verdicts.

    Returns:
        one row per (benchmark, metric, other): ``benchmark, metric, a, b, mean_a, mean_b, difference,
        ci_low, ci_high, p_value, n, test, p_holm, verdict`` (``verdict`` from :func:`verdict`:
        ``better`` / ``worse`` / ``indistinguishable``, for ``method``). ``attrs["alpha"]`` holds alpha.
    """
    if isinstance(df, Mapping):
        if not df:
            raise ValueError("df is an empty mapping; pass {benchmark: frame}, at least one entry")
        df = pd.concat([f.assign(benchmark=name) for name, f in df.items()], ignore_index=True)
    if "benchmark" not in df.columns:
        df = df.assign(benchmark="")
    if method not in set(df["method"]):
        raise ValueError(f"method {method!r} is not in df; methods: {list(dict.fromkeys(df['method']))}")
    rows = []
    for bench, part in df.groupby("benchmark", sort=False):
        present = list(dict.fromkeys(part["method"]))
        cmp_with = [m for m in (present if others is None else others) if m != method and m in present]
        for metric in (list(dict.fromkeys(part["metric"])) if metrics is None else metrics):
            has = set(part.loc[part["metric"] == metric, "method"])
            if method not in has:
                continue
            for other in cmp_with:
                if other in has:
                    res = paired(part, metric, method, other, seed, ci=ci, n_boot=n_boot,
                                 n_resamples=n_resamples)
                    rows.append({"benchmark": bench, **res.as_dict()})
    cols = ["benchmark", *Paired.__dataclass_fields__, "p_holm", "verdict"]
    out = pd.DataFrame(rows, columns=cols[:-2])
    out["p_holm"] = holm(out["p_value"].to_numpy(float))
    out["verdict"] = [verdict(d, p, m, alpha) for d, p, m in zip(out["difference"], out["p_holm"],
                                                                  out["metric"], strict=True)]
    out.attrs["alpha"] = alpha
    return out
