"""Bootstrap intervals, paired tests and Holm's correction on data whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import cam_core as cc
from cam_core.evaluation import statistics as S


def tidy(values: dict[str, np.ndarray], metric: str = "insertion") -> pd.DataFrame:
    """cc.evaluate's tidy frame for given per-image values of each method."""
    parts = [pd.DataFrame({"image": np.arange(len(v)), "method": m, "metric": metric, "value": v,
                           "target": 0}) for m, v in values.items()]
    return pd.concat(parts, ignore_index=True)


def test_reexported_from_evaluation():
    for name in ("summarize", "paired", "paired_table", "holm"):
        assert getattr(cc.evaluation, name) is getattr(S, name)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    reps = 300
    for r in range(reps):
        x = rng.normal(1.0, 2.0, 40)
        low, high = S.bootstrap_ci(x, 0.95, n_boot=1000, seed=r)
        hits += low <= 1.0 <= high
    # the percentile bootstrap under-covers a little at n = 40 (about 93-94%); 300 reps: SE ~ 1.4%
    assert 0.89 <= hits / reps <= 0.985
    # width shrinks like 1/sqrt(n): about 2 * 1.96 * sd / sqrt(n)
    low, high = S.bootstrap_ci(rng.normal(0, 2.0, 1600), 0.95, n_boot=2000, seed=0)
    assert high - low == pytest.approx(2 * 1.96 * 2.0 / 40, rel=0.12)


def test_summarize_gives_scaled_mean_interval_and_counts_and_is_seeded():
    rng = np.random.default_rng(1)
    ad = rng.uniform(0, 0.6, 200)
    ad[:5] = np.nan
    df = pd.concat([tidy({"A": ad, "B": ad / 2}, "AD"), tidy({"A": rng.uniform(0, 1, 200)}, "insertion")])
    s = S.summarize(df, ci=0.95, seed=0)
    assert list(s.columns) == ["method", "metric", "mean", "ci_low", "ci_high", "n", "n_nan"]
    row = s.set_index(["method", "metric"]).loc[("A", "AD")]
    assert row["mean"] == pytest.approx(100 * np.nanmean(ad))  # AD in %
    assert row["n"] == 195 and row["n_nan"] == 5
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    half = 1.96 * 100 * np.nanstd(ad) / math.sqrt(195)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * half, rel=0.15)
    pd.testing.assert_frame_equal(s, S.summarize(df, ci=0.95, seed=0))
    assert not S.summarize(df, seed=1)["ci_low"].equals(s["ci_low"])
    # a cell's interval does not depend on the other methods in the frame
    only_a = S.summarize(df[df["method"] == "A"], seed=0).set_index(["method", "metric"])
    assert only_a.loc[("A", "AD"), "ci_low"] == row["ci_low"]
    wide = S.summarize(df, wide=True)
    assert wide.loc["B", "AD"] == pytest.approx(row["mean"] / 2) and np.isnan(wide.loc["B", "insertion"])
    assert S.summarize(df, ci=None)["ci_low"].isna().all()
    with pytest.raises(ValueError, match="coverage"):
        S.summarize(df, ci=95)


def test_paired_detects_a_known_shift_and_its_interval_covers_it():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.8, 150)  # per-image difficulty, shared by both methods
    a = base + 0.03 + rng.normal(0, 0.05, 150)
    b = base + rng.normal(0, 0.05, 150)
    res = S.paired(tidy({"A": a, "B": b}), "insertion", "A", "B", seed=0)
    assert res.test == "sign-flip" and res.n == 150
    assert res.difference == pytest.approx(np.mean(a - b))
    assert res.ci_low < 0.03 < res.ci_high and res.ci_low > 0
    assert res.p_value < 0.01
    again = S.paired(tidy({"A": a, "B": b}), "insertion", "A", "B", seed=0)
    assert again == res  # seeded


def test_paired_without_a_shift_rejects_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    rejected = 0
    reps = 200
    for r in range(reps):
        base = rng.uniform(0, 1, 30)
        df = tidy({"A": base + rng.normal(0, 0.1, 30), "B": base + rng.normal(0, 0.1, 30)})
        rejected += S.paired(df, "insertion", "A", "B", seed=r, n_boot=200, n_resamples=999).p_value <= 0.05
    assert 0.01 <= rejected / reps <= 0.10


def test_mcnemar_exact_on_a_hand_made_table():
    # 8 images where A hits and B misses, 2 the other way, 30 concordant: p = 2 P[Bin(10, 1/2) <= 2]
    a = np.array([1] * 8 + [0] * 2 + [1] * 20 + [0] * 10, float)
    b = np.array([0] * 8 + [1] * 2 + [1] * 20 + [0] * 10, float)
    assert S.mcnemar_exact(a, b) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert S.mcnemar_exact(a, a) == 1.0
    assert S.mcnemar_exact([1] * 12, [0] * 12) == pytest.approx(2 / 4096)
    res = S.paired(tidy({"A": a, "B": b}, "pointing"), "pointing", "A", "B")
    assert res.test == "mcnemar-exact"
    assert res.p_value == pytest.approx(0.109375)
    assert res.difference == pytest.approx(100 * 6 / 40)  # % hits


def test_holm_on_a_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    got = S.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(S.holm([0.2, np.nan, 0.9]), [0.4, np.nan, 0.9])  # NaN not counted in m
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.holm([1.5])


def test_paired_table_holm_corrects_and_reads_the_metrics_direction():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 0.8, 120)
    noise = lambda: rng.normal(0, 0.02, 120)  # noqa: E731
    # AD: lower is better. LIFT-CAM clearly lower than X; Y differs by zero-mean noise (mean exactly 0).
    lift = base + noise()
    z = rng.normal(0, 0.02, 60)
    df = tidy({"LIFT-CAM": lift, "X": base + 0.05 + noise(), "Y": lift + np.concatenate([z, -z])}, "AD")
    out = S.paired_table({"bench": df}, "LIFT-CAM")
    v = out.set_index("b")
    assert v.loc["X", "verdict"] == "better" and v.loc["X", "difference"] < 0
    assert v.loc["Y", "verdict"] == "indistinguishable"
    assert (out["p_holm"] >= out["p_value"]).all()
    assert list(out["benchmark"]) == ["bench", "bench"]
    flipped = S.paired_table(df.assign(method=df["method"].replace({"LIFT-CAM": "X", "X": "LIFT-CAM"})))
    assert flipped.set_index("b").loc["X", "verdict"] == "worse"
    with pytest.raises(ValueError, match="not in df"):
        S.paired_table(df, "Score-CAM")
    with pytest.raises(ValueError, match="no 'AD' values for method 'Z'"):
        S.paired(df, "AD", "LIFT-CAM", "Z")


def test_ci_table_writes_mean_and_interval_per_cell():
    df = pd.concat([tidy({"A": np.full(10, 0.5), "B": np.linspace(0, 1, 10)}, "pointing").assign(benchmark=b)
                    for b in ("s1", "s2")])
    t = S.ci_table(S.summarize(df), "pointing", fmt=".1f")
    assert list(t.index) == ["A", "B"] and list(t.columns) == ["s1", "s2"]
    assert t.loc["A", "s1"] == "50.0 [50.0, 50.0]"
    assert t.loc["B", "s2"].startswith("50.0 [")
    with pytest.raises(ValueError, match="no 'AD' rows"):
        S.ci_table(S.summarize(df), "AD")
