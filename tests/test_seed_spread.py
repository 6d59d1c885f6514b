"""cam_core.seed_spread: per-seed means, their range, ranks per seed, and the computed sentence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cam_core as cc


def _frame(shift: float, noise: float = 0.01, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(i, m, "AD", base + shift * s + noise * rng.standard_normal(), 0, s)
            for s in range(3) for m, base in (("LIFT-CAM", 0.2), ("Grad-CAM", 0.5)) for i in range(n)]
    return pd.DataFrame(rows, columns=["image", "method", "metric", "value", "target", "model_seed"])


def test_table_gives_per_seed_means_range_and_share():
    t = cc.seed_spread.table({"b": _frame(0.1)})
    row = t[t["method"] == "LIFT-CAM"].iloc[0]
    assert row["seed 0"] == pytest.approx(20, abs=0.5) and row["seed 2"] == pytest.approx(40, abs=0.5)
    assert row["range"] == pytest.approx(20, abs=1.0)  # AD in %: seeds 0.1 apart
    assert row["share_of_mean"] > 0.9  # almost all of the mean's variance is the seeds'
    flat = cc.seed_spread.table({"b": _frame(0.0, noise=0.1, n=400)})  # no seed effect: images dominate
    assert (flat["share_of_mean"] < row["share_of_mean"]).all() and (flat["range"] < 3).all()


def test_ranks_and_text():
    r = cc.seed_spread.ranks({"b": _frame(0.1)}, "LIFT-CAM", ["Grad-CAM"], ["AD"])
    assert r["rank"].tolist() == [1, 1, 1]  # AD: lower is better
    text = cc.seed_spread.text({"b": _frame(0.1)}, methods=["LIFT-CAM", "Grad-CAM"])
    assert "3 trained models" in text and "first in every model in 1 of them" in text
    one = _frame(0.1)
    assert "one trained model" in cc.seed_spread.text({"b": one[one["model_seed"] == 0]}, ["LIFT-CAM", "Grad-CAM"])
    with pytest.raises(ValueError, match="model_seed"):
        cc.seed_spread.table(one.drop(columns="model_seed"))


def test_recipe_ablation_table_and_text():
    def summary(box_ad: float, lift_ad: float) -> pd.DataFrame:
        rows = [("Box", "AD", box_ad), ("Uniform", "AD", 30.0), ("LIFT-CAM", "AD", lift_ad), ("Grad-CAM", "AD", 20.0)]
        return pd.DataFrame(rows, columns=["method", "metric", "mean"])

    s = {"label": summary(40.0, 10.0), "evidence": summary(5.0, 25.0)}
    t = cc.recipe_ablation.table(s, methods=["LIFT-CAM", "Box"], metrics=["AD"])
    assert t.loc["Box", ("AD", "evidence")] == 5.0 and t.loc["LIFT-CAM", ("AD", "label")] == 10.0
    text = cc.recipe_ablation.text(s, cams=["LIFT-CAM", "Grad-CAM"])
    assert "label: Box 40 vs Uniform 30, LIFT-CAM rank 1 of 2" in text
    assert "evidence: Box 5 vs Uniform 30, LIFT-CAM rank 2 of 2" in text
    assert "differs between the recipes on 1 of 1 metrics" in text
