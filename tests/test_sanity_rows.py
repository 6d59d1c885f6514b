"""Sanity rows: the true box must beat maps that know nothing, and a chapter says so when it does not.

On every embedded benchmark, through the public ``cc.metrics`` API, the ground-truth ``Box`` map must
beat ``Uniform`` and ``Random`` on AD, ADD, insertion, deletion and energy (issue 11). Benchmark v3's models
failed it on AD (trained to keep their label under any mask, they read "most of the image black" as
"unsure", so the true box lost to a uniformly dimmed image); v4's are trained on targets that follow the
evidence the mask leaves (:mod:`cam_core.benchmarks.augment`). The default models are now trained on
labels only (issue 20): on them Box must still win on ADD, insertion and energy; AD is the known failure
that the chapters report.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import cam_core as cc
from cam_core.evaluation import sanity

N_IMAGES = 24
STEPS = 10


def test_violations_and_warning_on_hand_made_summaries():
    good = pd.DataFrame({"method": ["Box", "Uniform", "Random"] * 2, "metric": ["AD"] * 3 + ["energy"] * 3,
                         "mean": [10.0, 20.0, 30.0, 80.0, 30.0, 30.0]})
    assert sanity.violations(good).empty and sanity.warning(good) == ""
    bad = good.assign(benchmark="shapes-single")
    bad.loc[1, "mean"] = 5.0  # Uniform's AD below Box's: Box loses on a lower-is-better metric
    v = sanity.violations(bad)
    assert v[["benchmark", "metric", "baseline"]].values.tolist() == [["shapes-single", "AD", "Uniform"]]
    text = sanity.warning(bad)
    assert text.startswith("> **Warning: sanity check failed.**") and "`shapes-single` AD" in text
    nan_box = good.copy()
    nan_box.loc[3, "mean"] = float("nan")  # Box not measurable counts as not beating
    assert list(sanity.violations(nan_box)["metric"]) == ["energy", "energy"]
    with pytest.raises(ValueError, match="long form"):
        sanity.violations(pd.DataFrame({"x": [1]}))


def box_vs_baselines(name: str, arch: str) -> pd.DataFrame:
    """Mean AD, ADD, insertion, deletion, energy of Box / Uniform / Random on N_IMAGES test images."""
    bench = cc.benchmarks.load(name, device="cpu", arch=arch)
    batch = next(iter(bench.images(n=N_IMAGES, seed=0, batch_size=N_IMAGES)))
    model = bench.model_for(batch)
    with torch.no_grad():
        t = model(batch.x).argmax(1)
    boxes = [batch.boxes_for(i, int(t[i])) for i in range(len(batch))]
    keep = torch.tensor([len(b) > 0 for b in boxes])  # Box is undefined without a box of the class
    x, t, boxes = batch.x[keep], t[keep], [b for b, k in zip(boxes, keep, strict=True) if k]
    index = batch.index[keep]
    rows = []
    for ref in ("Box", "Uniform", "Random"):
        s = cc.reference_maps.get(ref)(x, t, boxes=boxes, index=index)
        sc = cc.metrics.confidence_scores(model, x, s, t, mean=bench.mean, std=bench.std)
        auc = cc.metrics.insertion_deletion(model, x, s, t, steps=STEPS, mean=bench.mean, std=bench.std)
        h, w = x.shape[-2:]
        values = {
            "AD": 100 * cc.metrics.average_drop(sc.original, sc.explanation),
            "ADD": 100 * cc.metrics.average_drop_in_deletion(sc.original, sc.inverted),
            "insertion": auc["insertion"],
            "deletion": auc["deletion"],
            "energy": 100 * cc.metrics.energy_pointing_game(s, cc.metrics.batch_masks(boxes, (h, w))),
        }
        rows += [{"method": ref, "metric": m, "mean": float(v.nanmean())} for m, v in values.items()]
    return pd.DataFrame(rows)


#: what Box must win on whatever the training recipe: with a model trained on labels only (issue 20) the
#: drop metrics that score a masked image against a dimmed one (AD, and deletion on one-object images)
#: are not such metrics: a dimmed image stays in the model's distribution, a black background does not
#: (the book names those metrics, computed, through ``sanity.warning``)
RECIPE_FREE = ["ADD", "insertion", "energy"]


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("name", ["shapes-single", "shapes-multi", "shapes-clutter"])
def test_box_beats_uniform_and_random_on_every_embedded_benchmark(name, arch):
    summary = box_vs_baselines(name, arch)
    recipe = cc.benchmarks.load(name, device="cpu", arch=arch).recipe
    checked = summary if recipe == "evidence" else summary[summary["metric"].isin(RECIPE_FREE)]
    bad = sanity.violations(checked)
    assert bad.empty, f"{name}/{arch} ({recipe} recipe): Box does not beat the baselines:\n{bad.to_string()}"
