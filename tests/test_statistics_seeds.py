"""Several trained models (issue 20): the hierarchical bootstrap over seeds and images, the between-seed
share of the variance, and exact intervals for the 0/1 metrics, on data whose answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cam_core as cc
from cam_core import statistics as S


def seeded_frame(offsets, n=150, sd=0.1, metric="insertion", methods=("A",), shift=0.0, seed=0):
    """One tidy frame per model seed on the same images, model k's values shifted by offsets[k]."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, n)
    parts = []
    for k, off in enumerate(offsets):
        for j, m in enumerate(methods):
            parts.append(pd.DataFrame({"image": np.arange(n), "method": m, "metric": metric,
                                       "value": base + off + j * shift + rng.normal(0, sd, n), "target": 0,
                                       "model_seed": k}))
    return pd.concat(parts, ignore_index=True)


def test_intervals_over_seeds_are_wider_when_the_seeds_differ():
    df = seeded_frame([-0.1, 0.0, 0.1])
    with_seeds = S.summarize(df).iloc[0]
    pooled = S.summarize(df.drop(columns="model_seed")).iloc[0]
    assert with_seeds["mean"] == pytest.approx(pooled["mean"])  # equal images per seed
    assert with_seeds["n_seeds"] == 3 and with_seeds["n"] == 450
    assert (with_seeds["ci_high"] - with_seeds["ci_low"]) > 3 * (pooled["ci_high"] - pooled["ci_low"])
    assert with_seeds["seed_share"] > 0.8  # almost all of the mean's variance is the seeds'
    # seeds that agree: about the pooled width, and little of the variance between seeds
    same = S.summarize(seeded_frame([0.0, 0.0, 0.0])).iloc[0]
    assert (same["ci_high"] - same["ci_low"]) < 1.6 * (pooled["ci_high"] - pooled["ci_low"])
    assert same["seed_share"] < 0.5
    assert list(S.summarize(df.drop(columns="model_seed")).columns) == [
        "method", "metric", "mean", "ci_low", "ci_high", "n", "n_nan"]  # no seeds: as before


def test_seed_variance_recovers_known_components():
    rng = np.random.default_rng(5)
    parts = []
    for k in range(40):  # 40 models whose means vary with sd 0.2, images with sd 0.5
        parts.append(pd.DataFrame({"image": np.arange(200), "method": "A", "metric": "insertion",
                                   "value": rng.normal(0, 0.2) + rng.normal(0, 0.5, 200), "model_seed": k}))
    sv = S.seed_variance(pd.concat(parts)).iloc[0]
    assert sv["var_between"] == pytest.approx(0.04, rel=0.35)
    assert sv["var_within"] == pytest.approx(0.25, rel=0.05)
    assert sv["share_between"] == pytest.approx(0.04 / 0.29, rel=0.35)
    with pytest.raises(ValueError, match="model_seed"):
        S.seed_variance(parts[0].drop(columns="model_seed"))


def test_hierarchical_bootstrap_covers_the_mean_of_new_models():
    """Coverage of the population mean when models differ: ~95% with seeds, far less ignoring them."""
    rng = np.random.default_rng(7)
    hits = naive = 0
    reps = 150
    for r in range(reps):
        groups = [rng.normal(rng.normal(0, 0.3), 1.0, 60) for _ in range(5)]
        boot = S.hierarchical_bootstrap(groups, 1000, r)
        low, high = np.quantile(boot, [0.025, 0.975])
        hits += low <= 0 <= high
        lo, hi = S.bootstrap_ci(np.concatenate(groups), 0.95, 1000, r)
        naive += lo <= 0 <= hi
    assert hits / reps > 0.78  # the percentile bootstrap with 5 groups under-covers somewhat
    assert naive / reps < hits / reps - 0.15


def test_paired_with_seeds_resamples_models():
    df = seeded_frame([0.0, 0.0, 0.0], methods=("A", "B"), shift=0.05)
    res = S.paired(df, "insertion", "B", "A")
    assert res.test == "hierarchical-bootstrap" and res.n == 450
    assert res.difference == pytest.approx(0.05, abs=0.02) and res.ci_low > 0 and res.p_value < 0.01
    # a difference that only one model shows is not significant across models
    one = seeded_frame([0.0, 0.0, 0.0], methods=("A", "B"))
    one.loc[(one["method"] == "B") & (one["model_seed"] == 0), "value"] += 0.15
    res = S.paired(one, "insertion", "B", "A")
    assert res.ci_low < 0.02 and res.p_value > 0.05
    naive = one.assign(image=one["image"] + 1000 * one["model_seed"]).drop(columns="model_seed")
    assert S.paired(naive, "insertion", "B", "A").p_value < 0.01  # ignoring the models: "significant"
    table = S.paired_table(df, "B")
    assert table.loc[0, "verdict"] == "better"
    # a difference every model shows clearly gets a p-value small enough to survive Holm over a chapter's
    # ~100 comparisons (with 2,000 resamples it could not go below 2 / 2001 = 0.001)
    clear = S.paired(df, "insertion", "B", "A")
    assert clear.p_value < 0.05 / 105 and (clear.a, clear.b) == ("B", "A")


def test_clopper_pearson_known_values_and_coverage_near_zero():
    low, high = S.clopper_pearson(0, 300)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 300), rel=1e-6)  # 1.22 %
    low, high = S.clopper_pearson(300, 300)
    assert high == 1 and low == pytest.approx(0.025 ** (1 / 300), rel=1e-6)
    low, high = S.clopper_pearson(5, 20)  # the textbook value (e.g. R's binom.test): 0.0866, 0.4910
    assert low == pytest.approx(0.08657, abs=1e-4) and high == pytest.approx(0.49105, abs=1e-4)
    rng = np.random.default_rng(0)
    for p in (0.003, 0.01, 0.05):  # coverage at rates near 0 (the bootstrap's was 0.59 at 0.003, n = 300)
        ks = rng.binomial(300, p, 2000)
        cover = {k: (lambda b: b[0] <= p <= b[1])(S.clopper_pearson(k, 300)) for k in np.unique(ks)}
        assert np.mean([cover[k] for k in ks]) >= 0.95


def test_summarize_gives_exact_intervals_for_0_1_metrics():
    df = pd.DataFrame({"image": np.arange(300), "method": "A", "metric": "IC", "value": 0.0, "target": 0})
    row = S.summarize(df).iloc[0]
    assert row["mean"] == 0 and row["ci_low"] == 0 and row["ci_high"] == pytest.approx(1.22, abs=0.01)
    assert S.with_ci(pd.Series([0.0]), pd.Series([row["ci_low"]]), pd.Series([row["ci_high"]]), ".1f")[0] == \
        "0.0 [0.0, 1.2]"
    hits = df.assign(metric="pointing", value=(np.arange(300) % 4 == 0).astype(float))
    row = S.summarize(hits).iloc[0]
    lo, hi = S.clopper_pearson(75, 300)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * lo, 100 * hi))
    seeded = pd.concat([df.assign(model_seed=k) for k in range(3)])
    row = S.summarize(seeded).iloc[0]
    assert row["ci_high"] == pytest.approx(100 * S.clopper_pearson(0, 900)[1])


def test_reexported():
    for name in ("seed_variance", "clopper_pearson", "hierarchical_bootstrap"):
        assert getattr(cc.evaluation, name) is getattr(S, name)
