"""Fills (issue 20): every perturbation metric's ``baseline=``, ROAD's imputation, the contrast-free drops,
on inputs with known answers."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from closed_form import MeanLinear
from torch import nn

import cam_core as cc
from cam_core import metrics as M
from cam_core.benchmarks.base import Benchmark, Sample


class Capture(nn.Module):
    """Records every batch it scores (to read back the perturbed images); logits from the mean."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, -m], dim=1)


def ramp(n=2, c=3, h=24, w=28):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    base = 0.03 * xx - 0.02 * yy + 0.5
    return (base + torch.arange(c, dtype=torch.float64).view(1, c, 1, 1) * 0.1).expand(n, c, h, w).clone()


# ---- ROAD's imputation -------------------------------------------------------------------------
def test_road_reproduces_a_linear_ramp_through_interior_holes():
    """A linear image is harmonic for the symmetric 8-neighbour stencil: linear imputation is exact."""
    x = ramp()
    keep = torch.ones(2, 24, 28, dtype=torch.bool)
    keep[0, 3:15, 4:20] = False  # one big hole
    keep[1, 5:9, 5:9] = False
    keep[1, 12:20, 2:26] = False  # two holes
    exact = M.road_impute(x, keep, noise=0.0, tol=1e-12)
    torch.testing.assert_close(exact, x, atol=1e-8, rtol=0)
    noisy = M.road_impute(x, keep, seed=3)  # default noise 0.01: the ramp up to noise
    removed = ~keep[:, None].expand_as(x)
    assert torch.equal(noisy[~removed], x[~removed])  # kept pixels untouched
    err = (noisy - x)[removed]
    assert err.abs().max() < 0.06 and 0.005 < err.std() < 0.015


def test_road_is_seeded_batched_and_keeps_a_constant():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 16, 16, generator=g)
    keep = torch.rand(3, 16, 16, generator=g) > 0.6
    a, b = M.road_impute(x, keep, seed=1), M.road_impute(x, keep, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, M.road_impute(x, keep, seed=2))
    for i in range(3):  # an image's fill does not depend on the batch it is in
        torch.testing.assert_close(M.road_impute(x[i : i + 1], keep[i : i + 1], seed=1), a[i : i + 1],
                                   atol=1e-5, rtol=0)
    const = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(M.road_impute(const, keep[:1], noise=0.0), const)
    # the imputed value is the weighted mean of the 8 neighbours (the defining equation, Rong et al.)
    u = M.road_impute(x.double(), keep, noise=0.0, tol=1e-13)
    w = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    for i, j in [(5, 5), (0, 0), (15, 7), (8, 0)]:
        for n in range(3):
            if keep[n, i, j]:
                continue
            num = den = 0.0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < 16 and 0 <= j + dj < 16 and (di or dj):
                        num += w[di + 1, dj + 1] * u[n, :, i + di, j + dj]
                        den += w[di + 1, dj + 1]
            torch.testing.assert_close(u[n, :, i, j], num / den, atol=1e-9, rtol=0)


def test_road_without_kept_pixels_is_the_empty_value_and_bad_masks_are_refused():
    x = torch.rand(2, 3, 8, 8)
    out = M.road_impute(x, torch.zeros(2, 8, 8, dtype=torch.bool), noise=0.0, empty=torch.tensor([1.0, 2, 3]))
    assert torch.equal(out, torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1).expand_as(x))
    with pytest.raises(ValueError, match="keep_mask must be"):
        M.road_impute(x, torch.ones(2, 7, 8, dtype=torch.bool))


# ---- baseline images -----------------------------------------------------------------------------
def test_each_fill_on_a_known_answer():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    x = torch.randn(2, 3, 10, 10, generator=g)
    keep = torch.rand(2, 10, 10, generator=g) > 0.5
    # zero: black in pixel space; mean: each image's per-channel mean (normalised or not)
    torch.testing.assert_close(M.baseline_image(x, "zero", mean, std), (-mean / std).view(1, 3, 1, 1).expand_as(x))
    for kw in ({}, {"mean": mean, "std": std}):
        torch.testing.assert_close(M.baseline_image(x, "mean", **kw), x.mean(dim=(2, 3), keepdim=True).expand_as(x))
        torch.testing.assert_close(M.fill_image(x, keep, "mean", **kw),
                                   torch.where(keep[:, None], x, x.mean(dim=(2, 3), keepdim=True)))
    const = torch.full((1, 3, 10, 10), 0.7)
    torch.testing.assert_close(M.baseline_image(const, "blur"), const)  # blur of a constant is the constant
    torch.testing.assert_close(M.fill_image(const, keep[:1], "blur"), const)
    lin = ramp(1, 3, 10, 10).float()  # road: pixel-space noise 0.01, i.e. 0.01/std in normalised space
    road = M.fill_image(lin, keep[:1], "road", mean, std, seed=0)
    assert ((road - lin) * std.view(1, 3, 1, 1)).abs().max() < 0.05
    with pytest.raises(ValueError, match="keep="):
        M.baseline_image(x, "road")
    with pytest.raises(ValueError, match="baseline must be one of"):
        M.fill_image(x, keep, "noise")


def test_zero_fill_is_unchanged_bit_for_bit():
    """The default gives exactly the paper's product (pixel-space black), as before issue 20."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    x = torch.randn(4, 3, 12, 12, generator=g)
    s = torch.rand(4, 12, 12, generator=g)
    t = torch.tensor([0, 1, 2, 0])
    sc = M.confidence_scores(model, x, s, t, mean=mean, std=std)
    with torch.no_grad():
        probs = lambda im: model(im).softmax(1).gather(1, t[:, None])[:, 0]  # noqa: E731
        fill = M.black(x, mean, std)
        assert torch.equal(sc.explanation, M.confidence_scores(model, x, s, t, mean=mean, std=std,
                                                               baseline="zero").explanation)
        torch.testing.assert_close(sc.explanation, probs(x * s[:, None] + fill * (1 - s[:, None])))
        torch.testing.assert_close(sc.inverted, probs(x * (1 - s[:, None]) + fill * s[:, None]))


@pytest.mark.parametrize("baseline", ["mean", "blur", "road"])
def test_confidence_scores_and_curves_use_the_fill(baseline):
    """IC/AD/ADD and insertion/deletion score exactly the filled images fill_image builds."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    s = torch.rand(2, 8, 8, generator=g)
    t = torch.zeros(2, dtype=torch.long)
    model = Capture()
    sc = M.confidence_scores(model, x, s, t, baseline=baseline, seed=4)
    seen = torch.cat(model.seen)
    torch.testing.assert_close(seen[2:4], M.fill_image(x, s, baseline, seed=4))
    torch.testing.assert_close(seen[4:6], M.fill_image(x, 1 - s, baseline, seed=4))
    want = M.fill_image(x, s, baseline, seed=4).mean(dim=(1, 2, 3))
    torch.testing.assert_close(sc.explanation, torch.sigmoid(2 * want))
    model.seen.clear()
    out = M.insertion_deletion(model, x, s, t, steps=4, baseline=baseline, return_curves=True)
    seen = torch.cat(model.seen)  # 2 curves x 5 steps x 2 images
    keep = (M.pixel_ranks(s) < M.step_counts(64, 4)[2]).view(2, 8, 8)
    torch.testing.assert_close(seen[4:6], M.fill_image(x, keep, baseline))  # insertion, step 2
    torch.testing.assert_close(seen[14:16], M.fill_image(x, ~keep, baseline))  # deletion, step 2
    assert out["insertion"].shape == (2,)


# ---- contrast-free drops ------------------------------------------------------------------------
def test_top_q_drops_by_hand_and_invariant_to_contrast():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 10, 10, generator=g)
    s = torch.rand(3, 10, 10, generator=g)
    t = torch.zeros(3, dtype=torch.long)
    out = M.top_q_drops(MeanLinear(4.0), x, s, t, qs=(10, 50))
    assert sorted(out) == ["AD@10", "AD@50", "ADD@10", "ADD@50"]
    for q in (10, 50):
        keep = M.top_q_masks(s, q)
        assert int(keep[0].sum()) == q  # round(q% of 100 pixels)
        y = torch.sigmoid(4 * x.mean(dim=(1, 2, 3)))
        o = torch.sigmoid(4 * (x[:, 0] * keep).mean(dim=(1, 2)))
        d = torch.sigmoid(4 * (x[:, 0] * ~keep).mean(dim=(1, 2)))
        torch.testing.assert_close(out[f"AD@{q}"], (y - o).clamp_min(0) / y)
        torch.testing.assert_close(out[f"ADD@{q}"], (y - d) / y)
    for p in (0.25, 4.0):  # a monotone rescaling of the map changes nothing
        again = M.top_q_drops(MeanLinear(4.0), x, s**p, t, qs=(10, 50))
        for k in out:
            assert torch.equal(again[k], out[k])
    with pytest.raises(ValueError, match="AD@q"):
        M.parse_drop_metric("AD@0")


class TinyBench(Benchmark):
    """6 random normalised 12x12 images, a tiny CNN (3 classes), one box per class."""

    name, arch, target_layer, class_names = "tiny", "vgg", "3", ["a", "b", "c"]

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                   nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 3)).eval()
        self.mean, self.std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.2, 0.25])
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(6, 3, 12, 12, generator=g)
        self.labels = torch.randint(0, 3, (6,), generator=g)

    def __len__(self) -> int:
        return 6

    def sample(self, i: int) -> Sample:
        boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [6.0, 0.0, 12.0, 6.0], [2.0, 6.0, 10.0, 12.0]])
        return Sample(self.x[i], self.labels[i], boxes, torch.tensor([0, 1, 2]))


def test_evaluate_passes_the_fill_on_and_keys_the_cache_by_it(tmp_path):
    bench = TinyBench()
    run = dict(methods=["Grad-CAM", "Uniform"], metrics=["AD", "insertion", "AD@25", "ADD@25"], n_images=4,
               batch_size=2, progress=False, steps=4, cache=tmp_path)
    zero = cc.evaluate(bench, **run)
    road = cc.evaluate(bench, **run, baseline="road")
    assert zero.attrs["cache"] != road.attrs["cache"]
    assert set(zero["metric"]) == {"AD", "insertion", "AD@25", "ADD@25"}
    z = zero.set_index(["image", "method", "metric"])["value"]
    r = road.set_index(["image", "method", "metric"])["value"]
    assert not z.equals(r)
    # the runner's AD@25 under ROAD is the metric's own value on the same images
    batch = next(iter(bench.images(indices=sorted(set(zero["image"]))[:1], batch_size=1)))
    with torch.no_grad():
        t = bench.model(batch.x).argmax(1)
    sal = cc.GradCAM(bench.model, bench.target_layer)(batch.x, target=t).saliency
    want = M.top_q_drops(bench.model, batch.x, sal, t, (25,), baseline="road", mean=bench.mean, std=bench.std)
    got = r[(int(batch.index[0]), "Grad-CAM", "AD@25")]
    assert got == pytest.approx(float(want["AD@25"][0]), abs=1e-5)
    summary = cc.evaluation.summarize(road)
    assert set(summary["metric"]) >= {"AD@25", "ADD@25"}
    with pytest.raises(ValueError, match="baseline must be one of"):
        cc.evaluate(bench, **{**run, "cache": None}, baseline="noise")


# ---- contrast and fill sensitivity ---------------------------------------------------------------
def test_contrast_moves_ad_but_not_the_contrast_free_drops():
    bench = TinyBench()
    df = cc.contrast.rescaling(bench, ["Grad-CAM", "LIFT-CAM"], n_images=4, powers=(0.25, 1.0, 4.0),
                               batch_size=2)
    assert set(df["metric"]) == {"IC", "AD", "ADD", "AD@25", "ADD@25", "energy", "pointing"}
    table = cc.contrast.contrast_table(df)
    assert list(table.columns) == ["p=0.25", "p=1", "p=4", "range"]
    ad = table.loc["AD"]
    assert (ad["p=4"] > ad["p=0.25"]).all()  # a darker map (s**4) keeps less of the image: AD rises
    for free in cc.contrast.CONTRAST_FREE:  # ranking-only metrics (the hit pointing game: the peak) stay put
        assert table.loc[free, "range"].abs().max() == 0, free
    assert table.loc["energy", "range"].max() > 0  # the energy in the box moves with the contrast
    # at p = 1 the maps are the methods' own: energy and pointing as cc.evaluate computes them
    run = cc.evaluate(bench, methods=["Grad-CAM", "LIFT-CAM"], metrics=["energy", "pointing"], n_images=4,
                      batch_size=2, progress=False, cache=None)
    own = run.groupby(["method", "metric"])["value"].mean()
    at1 = df[df["power"] == 1.0].groupby(["method", "metric"])["value"].mean()
    for key in own.index:
        assert at1[key] == pytest.approx(own[key], abs=1e-6), key
    dom = cc.contrast.dominated(df).set_index("metric")
    assert not dom.loc["AD@25", "dominated"] and dom.loc["AD", "range_power"] > 0
    assert dom.loc["AD@25", "order_tau"] == 1.0  # nothing moved: the methods' order is the same at every power
    assert -1.0 <= dom.loc["AD", "order_tau"] <= 1.0
    line = cc.contrast.sentence(dom.reset_index(), "AD@25")
    assert "moves 0 points" in line and "less than the choice of method" in line and "order holds" in line
    scrambled = dom.reset_index().assign(order_tau=-0.2)
    assert "does not hold (Kendall tau with p = 1 falls to -0.20)" in cc.contrast.sentence(scrambled, "AD")
    with pytest.raises(ValueError, match="no 'XYZ' row"):
        cc.contrast.sentence(dom.reset_index(), "XYZ")
    with pytest.raises(ValueError, match="powers must be > 0"):
        cc.contrast.rescaling(bench, ["Grad-CAM"], n_images=2, powers=(0,))


def test_fill_table_verdicts_and_rank_agreement(tmp_path):
    from cam_core.evaluation import fill_sensitivity as FS

    assert FS.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert FS.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert FS.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    runs = FS.fill_runs(TinyBench(), ["Grad-CAM", "LIFT-CAM", "Uniform"], fills=("zero", "road"), n_images=4,
                        steps=4, batch_size=2, cache=tmp_path)
    table = FS.fill_table(runs)
    assert list(table["fill"]) == ["zero", "zero", "road", "road"]
    zero = table[table["fill"] == "zero"]
    assert (zero["tau_vs_zero"] == 1.0).all()
    assert set(table["Grad-CAM"]) <= {"better", "worse", "≈"} and set(table["rank"]) <= {1, 2, 3}


def test_fill_table_pools_independently_trained_models(tmp_path):
    """Several trained models (seeds): a model_seed column, means that average the models' means, and
    hierarchical verdicts; the same table's shape as with one model."""
    from cam_core.evaluation import fill_sensitivity as FS

    first, second = TinyBench(), TinyBench()
    first.model_seed, second.model_seed = 0, 1
    torch.manual_seed(3)
    with torch.no_grad():
        for p in second.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    first.model_id, second.model_id = "tiny:seed0", "tiny:seed1"  # the evaluation cache tells them apart
    run = dict(fills=("zero", "road"), n_images=4, steps=4, batch_size=2, cache=tmp_path)
    runs = FS.fill_runs([first, second], ["Grad-CAM", "LIFT-CAM", "Uniform"], **run)
    assert sorted(runs["model_seed"].unique()) == [0, 1]
    one = FS.fill_runs(first, ["Grad-CAM", "LIFT-CAM", "Uniform"], **run)
    assert "model_seed" not in one.columns
    pd.testing.assert_frame_equal(runs[runs["model_seed"] == 0].drop(columns="model_seed").reset_index(drop=True),
                                  one.reset_index(drop=True))  # the first model's rows are its own run
    table = FS.fill_table(runs)
    assert list(table["fill"]) == ["zero", "zero", "road", "road"]
    assert (table[table["fill"] == "zero"]["tau_vs_zero"] == 1.0).all()
    assert set(table["Grad-CAM"]) <= {"better", "worse", "≈"}
    per_model = runs.groupby(["fill", "metric", "method", "model_seed"])["value"].mean()
    pooled = per_model.groupby(level=["fill", "metric", "method"]).mean()
    ins = pooled.loc[("zero", "insertion")]
    want_rank = int(list(ins.sort_values(ascending=False).index).index("LIFT-CAM")) + 1
    assert table[(table["fill"] == "zero") & (table["metric"] == "insertion")]["rank"].item() == want_rank
