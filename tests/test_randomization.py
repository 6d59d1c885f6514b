"""Model randomization and class sensitivity (Adebayo et al., 2018), the extended sanity warning and the
per-family headline (issue 20)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import cam_core as cc
from cam_core import claims, sanity
from cam_core.methods.base import BaseCAM
from cam_core.metrics.maps import rank_correlation, ssim


class SumOfMaps(BaseCAM):
    """alpha_k = 1: the map is the sum of the activation maps, whatever the weights above the layer."""

    name = "SumOfMaps"

    def coefficients(self, ctx):
        return torch.ones(ctx.activations.shape[:2], dtype=ctx.activations.dtype, device=ctx.activations.device)


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU(),
                         nn.Linear(16, 4)).eval()


X = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_layers_from_the_logits_down_and_the_head():
    model = tiny()
    assert sanity.randomizable_layers(model) == ["8", "6", "2", "0"]
    assert sanity.head_layers(model, "3") == ["8", "6"]


def test_randomizing_the_head_changes_grad_cam_and_never_the_callers_model():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    df = cc.sanity.randomization(model, "3", "Grad-CAM", X)
    assert list(df.columns) == ["step", "layer", "in_head", "spearman", "ssim"]
    assert list(df["layer"]) == ["8", "6", "2", "0"] and list(df["in_head"]) == [True, True, False, False]
    assert df["spearman"].iloc[1] < 0.9  # the whole head random: Grad-CAM's map moved
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # caller's weights intact
    assert torch.equal(state, torch.random.get_rng_state())  # no global random state used
    again = cc.sanity.randomization(model, "3", "Grad-CAM", X)
    pd.testing.assert_frame_equal(df, again)  # seeded
    per = cc.sanity.randomization(model, "3", cc.GradCAM, X, per_image=True)
    assert len(per) == 4 * 4 and per.groupby("step")["spearman"].mean().to_numpy() == pytest.approx(
        df["spearman"].to_numpy())


def test_a_head_independent_map_is_unchanged_by_a_random_head():
    model = tiny()
    for method in (SumOfMaps, "EigenCAM"):
        df = cc.sanity.randomization(model, "3", method, X, mode="cascade")
        head = df[df["in_head"]]
        assert np.allclose(head["spearman"], 1.0) and np.allclose(head["ssim"], 1.0)
        assert df["spearman"].iloc[-1] < 0.99  # the body randomized: now it moves
        ind = cc.sanity.randomization(model, "3", method, X, mode="independent")
        assert np.allclose(ind[ind["in_head"]]["spearman"], 1.0)
        assert ind.loc[ind["layer"] == "2", "spearman"].item() < 0.99
    table = cc.sanity.randomization_check(model, "3", [SumOfMaps, "Grad-CAM"], X)
    v = table.set_index("method")["randomization"]
    assert v["SumOfMaps"] == "fail" and v["Grad-CAM"] == "pass"
    with pytest.raises(ValueError, match="mode must be one of"):
        cc.sanity.randomization(model, "3", "Grad-CAM", X, mode="top")


def test_the_pass_fail_table_has_intervals_and_pools_independently_trained_models():
    model = tiny()
    torch.manual_seed(5)
    other = tiny()  # a second "seed": same architecture, other weights
    for p in other.parameters():
        p.data += 0.2 * torch.randn_like(p)
    one = cc.sanity.randomization_check(model, "3", [SumOfMaps, "Grad-CAM"], X).set_index("method")
    two = cc.sanity.randomization_check([model, other], "3", [SumOfMaps, "Grad-CAM"], X).set_index("method")
    for t, n in ((one, 1), (two, 2)):
        assert (t["n_models"] == n).all()
        for metric in cc.sanity.CHECK_METRICS:
            low, mean, high = t[f"{metric}_low"], t[metric], t[f"{metric}_high"]
            assert (low <= mean + 1e-12).all() and (mean <= high + 1e-12).all()
    # a head-independent map: identical on every model, whatever the head; decided, and fails on both models
    assert two.loc["SumOfMaps", "spearman_head_low"] == pytest.approx(1.0)
    assert two.loc["SumOfMaps", "randomization"] == "fail" and bool(two.loc["SumOfMaps", "decided"])
    assert two.loc["SumOfMaps", "models_failing"] == 2
    # the pooled mean is the average of the models' own means
    per = cc.sanity.randomization_check([model, other], "3", ["Grad-CAM"], X, per_image=True)
    assert set(per.columns) == {"model_seed", "method", "image", "metric", "value"}
    own = per[per["metric"] == "spearman_head"].groupby("model_seed")["value"].mean()
    assert two.loc["Grad-CAM", "spearman_head"] == pytest.approx(own.mean())
    assert one.loc["Grad-CAM", "spearman_head"] == pytest.approx(own.loc[0])
    # decided: the interval lies on the verdict's side of the threshold
    for r in two.itertuples():
        side = r.spearman_head_high < 0.5 if r.randomization == "pass" else r.spearman_head_low >= 0.5
        assert bool(r.decided) == bool(side)
    # the book's rendering: one "mean [low, high]" cell per similarity; "?" marks a verdict not decided
    shown = cc.sanity.check_display(two.reset_index())
    assert list(shown.columns) == ["method", "Spearman, random head", "SSIM, random head",
                                   "Spearman, two classes", "SSIM, two classes", "models failing", "verdict"]
    assert shown.loc[0, "models failing"] == "2 of 2" and shown.loc[0, "verdict"] == "fail"
    assert shown["Spearman, random head"].str.fullmatch(r"-?\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]").all()
    means_only = cc.sanity.randomization_check(model, "3", ["Grad-CAM"], X, ci=None)
    assert means_only["decided"].isna().all() and means_only["spearman_head_low"].isna().all()
    with pytest.raises(ValueError, match="no model given"):
        cc.sanity.randomization_check([], "3", ["Grad-CAM"], X)


def test_randomization_statements_say_what_the_intervals_decide():
    t = pd.DataFrame({"method": ["A", "B", "C", "D"], "spearman_head": [0.9, 0.1, 0.45, float("nan")],
                      "spearman_head_low": [0.8, 0.0, 0.3, float("nan")],
                      "spearman_head_high": [0.95, 0.2, 0.6, float("nan")], "n_models": [3, 3, 3, 3],
                      "models_failing": pd.array([3, 0, 1, pd.NA], dtype="Int64"),
                      "randomization": ["fail", "pass", "pass", "n/a"],
                      "decided": pd.array([True, True, False, pd.NA], dtype="boolean"),
                      "note": ["", "", "", "needs a linear head"]})
    t.attrs["threshold"] = 0.5
    text = sanity.statements(randomization_table=t)
    assert "**Fail the model-randomization check**" in text and "A (0.90 [0.80, 0.95], 3 of 3 models)" in text
    assert "Pass (the whole interval below 0.5): B" in text
    assert "Too close to call" in text and "C (0.45 [0.30, 0.60], 1 of 3 models)" in text
    assert "D (needs a linear head)" in text


def test_class_sensitivity_compares_two_classes_of_one_image():
    model = tiny()
    per = cc.sanity.class_sensitivity(model, "3", "Grad-CAM", X, per_image=True)
    assert list(per.columns) == ["image", "class_a", "class_b", "spearman", "ssim"]
    assert (per["class_a"] != per["class_b"]).all()
    same = cc.sanity.class_sensitivity(model, "3", SumOfMaps, X).iloc[0]
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)


def test_map_similarity_known_values_and_skimage():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 12, 12, generator=g)
    assert torch.allclose(rank_correlation(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(rank_correlation(a, a**3), torch.ones(3, dtype=torch.float64))  # ranks only
    assert torch.allclose(rank_correlation(a, -a), -torch.ones(3, dtype=torch.float64))
    zero = torch.zeros(3, 12, 12)
    assert rank_correlation(a, zero).tolist() == [0.0] * 3 and rank_correlation(zero, zero).tolist() == [1.0] * 3
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    skm = pytest.importorskip("skimage.metrics")  # an independent implementation (scikit-image)
    b = torch.rand(3, 12, 12, generator=g)
    want = [skm.structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0)
            for i in range(3)]
    assert ssim(a, b).tolist() == pytest.approx(want, abs=1e-10)


def test_warning_names_metrics_where_a_map_that_knows_nothing_beats_the_methods():
    s = pd.DataFrame({"method": ["Grad-CAM", "LIFT-CAM", "Box", "Uniform", "Random"] * 3,
                      "metric": ["AD"] * 5 + ["insertion"] * 5 + ["IC"] * 5,
                      "mean": [60, 70, 20, 35, 80, 0.5, 0.6, 0.7, 0.2, 0.1, 0, 0, 0, 0, 0]}).assign(benchmark="b")
    beaten = sanity.beaten_by_baselines(s)
    assert beaten[["metric", "baseline", "n_beaten", "n_methods"]].values.tolist() == [["AD", "Uniform", 2, 2]]
    deg = sanity.degenerate_metrics(s)
    assert deg[["metric", "value"]].values.tolist() == [["IC", 0.0]]
    text = sanity.warning(s)
    assert "beats the methods** on AD" in text and "Degenerate metric:** `b` IC = 0" in text
    ok = s[s["metric"] == "insertion"]
    assert sanity.warning(ok) == ""


def test_headline_counts_per_family_never_pooled():
    pairs = pd.DataFrame({"benchmark": "b", "metric": ["AD", "ADD", "insertion", "energy"], "a": "LIFT-CAM",
                          "b": "Grad-CAM", "difference": 1.0, "ci_low": 0.5, "ci_high": 1.5, "p_holm": 0.01,
                          "verdict": ["better", "worse", "better", "indistinguishable"]})
    fam = claims.family_counts(pairs)
    assert fam[["family", "n", "better", "worse"]].values.tolist() == [
        ["drop", 2, 1, 1], ["insertion-deletion", 1, 1, 0], ["localization", 1, 0, 0]]
    text = claims.headline(pairs)
    assert "**drop** (AD, ADD): better in 1 of 2" in text and "not pooled" in text


def test_a_method_the_head_does_not_admit_gets_n_a_with_a_whole_clause():
    """CAM on a non-linear head: "n/a", and the note is the error's first clause, not cut at "e.g."."""
    from cam_core.evaluation.randomization import _first_clause

    msg = ("CAM (Zhou et al.) needs a head made of a global average pool followed by one Linear layer "
           "(e.g. torchvision ResNet at target_layer='layer4'); this head is X. Use Grad-CAM.")
    assert _first_clause(msg).endswith("target_layer='layer4')")
    assert _first_clause("It failed. Use X.") == "It failed"
