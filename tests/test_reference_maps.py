"""The sanity maps Box / Uniform / Random / Center: shapes, values, determinism, the runner's use of them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_evaluation import FakeBench

import cam_core as cc
from cam_core.evaluation import evaluate, summarize
from cam_core.evaluation import reference_maps as R

X = torch.zeros(3, 3, 8, 10)
T = torch.zeros(3, dtype=torch.long)
BOXES = [torch.tensor([[0.0, 0.0, 4.0, 2.0]]), torch.tensor([[0.0, 0.0, 2.0, 2.0], [8.0, 6.0, 10.0, 8.0]]),
         torch.zeros(0, 4)]


@pytest.mark.parametrize("name", R.SANITY_MAPS)
def test_every_map_is_n_h_w_in_unit_range_and_deterministic(name):
    m = R.get(name)
    a = m(X, T, boxes=BOXES, index=[5, 6, 7])
    assert a.shape == (3, 8, 10) and a.dtype == X.dtype
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, R.get(name)(X, T, boxes=BOXES, index=[5, 6, 7]), rtol=0, atol=0)
    assert cc.SANITY_MAPS == ["Box", "Uniform", "Random", "Center"]


def test_box_is_the_union_of_the_explained_class_boxes():
    a = R.get("box")(X, T, boxes=BOXES)
    assert a[0].sum() == 8 and a[0, :2, :4].all()
    assert a[1].sum() == 8 and a[1, 6:, 8:].all() and a[1, :2, :2].all()
    assert a[2].sum() == 0
    with pytest.raises(ValueError, match="needs boxes"):
        R.get("Box")(X, T)


def test_uniform_random_center_values():
    assert (R.get("Uniform")(X, T) == 0.5).all() and (R.get("Uniform", value=0.2)(X, T) == 0.2).all()
    r = R.get("Random")
    # each image's noise depends on its dataset index only, not on the batch it came in
    torch.testing.assert_close(r(X, T, index=[4, 9, 2])[1], r(X[:1], T[:1], index=[9])[0], rtol=0, atol=0)
    assert not torch.equal(r(X, T, index=[1, 2, 3])[0], r(X, T, index=[1, 2, 3])[1])
    assert not torch.equal(R.get("Random", seed=1)(X, T)[0], r(X, T)[0])
    c = R.get("Center")(X, T)[0]
    assert c.max() == c[3:5, 4:6].max() and torch.allclose(c, c.flip(0)) and torch.allclose(c, c.flip(1))
    with pytest.raises(ValueError, match="unknown reference map"):
        R.get("Oracle")
    with pytest.raises(ValueError, match="width"):
        R.get("Center", width=0)


def test_the_runner_evaluates_sanity_maps_by_name():
    bench = FakeBench()
    metrics = ["AD", "insertion", "energy", "local_accuracy"]
    df = evaluate(bench, methods=["Grad-CAM", *cc.SANITY_MAPS], metrics=metrics, n_images=8, batch_size=3,
                  cache=None, progress=False, steps=5)
    assert list(dict.fromkeys(df["method"])) == ["Grad-CAM", "Box", "Uniform", "Random", "Center"]
    box = df[df["method"] == "Box"]
    energy = box[box["metric"] == "energy"]
    # Box: energy 1 where the explained class has a box, and every metric NaN where it has none
    no_box = energy["value"].isna().to_numpy()
    assert np.allclose(energy["value"].dropna(), 1.0)
    for metric in ("AD", "insertion"):
        assert (box[box["metric"] == metric]["value"].isna().to_numpy() == no_box).all()
    assert df[(df["metric"] == "local_accuracy") & (df["method"] != "Grad-CAM")]["value"].isna().all()
    s = summarize(df, wide=True)
    assert np.isfinite(s.loc["Uniform", "AD"])
    with pytest.raises(ValueError, match="'Oracle'.*sanity map: Box"):
        evaluate(bench, methods=["Oracle"], cache=None)


def test_box_on_a_benchmark_without_boxes_is_a_clear_error():
    bench = FakeBench()
    bench.has_boxes = False
    with pytest.raises(ValueError, match="'Box' needs ground-truth boxes.*drop it"):
        evaluate(bench, methods=["Box", "Uniform"], metrics=["AD"], n_images=2, cache=None, progress=False)
    evaluate(bench, methods=["Uniform"], metrics=["AD"], n_images=2, cache=None, progress=False)
    assert R.for_benchmark(bench) == ["Uniform", "Random", "Center"]
    assert R.for_benchmark(FakeBench()) == cc.SANITY_MAPS
