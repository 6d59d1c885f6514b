"""The evaluation runner: tidy output, summary, resume after a crash, no work on re-run, atomic cache."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

import cam_core as cc
from cam_core import metrics as M
from cam_core.benchmarks.base import Benchmark, Sample
from cam_core.evaluation import evaluate, results, summarize
from cam_core.methods.gradient import GradCAM


class FakeBench(Benchmark):
    """12 random 12x12 images, a tiny CNN (3 classes), one box per class except class 2 in odd images."""

    name = "fake"
    arch = "vgg"

    def __init__(self, n: int = 12, device: str = "cpu"):
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 3),
        ).eval().to(device)
        self.device = torch.device(device)
        self.target_layer = "3"
        self.class_names = ["a", "b", "c"]
        self.mean, self.std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.2, 0.25])
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, 12, 12, generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.sample_calls = 0

    def __len__(self) -> int:
        return self.x.shape[0]

    def sample(self, i: int) -> Sample:
        self.sample_calls += 1
        boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [6.0, 0.0, 12.0, 6.0], [2.0, 6.0, 10.0, 12.0]])
        labels = torch.tensor([0, 1, 2])
        if i % 2:
            boxes, labels = boxes[:2], labels[:2]
        return Sample(self.x[i], self.labels[i], boxes, labels)


def counting_cam(name: str = "Grad-CAM", crash_at: int | None = None):
    """A Grad-CAM subclass that counts its calls and raises on call number ``crash_at``."""
    calls = {"n": 0}

    class Counting(GradCAM):
        def coefficients(self, ctx):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("simulated Ctrl-C")
            return super().coefficients(ctx)

    Counting.name = name
    return Counting, calls


METRICS = ["IC", "AD", "ADD", "insertion", "deletion", "energy", "pointing", "local_accuracy"]
RUN = dict(metrics=METRICS, n_images=10, seed=3, batch_size=3, progress=False, steps=10)


def test_tidy_table_and_summary_match_the_metrics(tmp_path):
    bench = FakeBench()
    cam, _ = counting_cam()
    df = evaluate(bench, methods=[cam], cache=None, **RUN)
    assert list(df.columns) == ["image", "method", "metric", "value", "target"]
    assert len(df) == 10 * len(METRICS)
    assert sorted(df["image"].unique()) == sorted(bench.subset(10, 3))
    # the per-image values are the metrics applied directly
    idx = bench.subset(10, 3)
    x = bench.x[idx]
    t = bench.model(x).argmax(1)
    res = GradCAM(bench.model, "3")(x, target=t)
    sc = M.confidence_scores(bench.model, x, res.saliency, t, mean=bench.mean, std=bench.std)
    want_ad = M.average_drop(sc.original, sc.explanation)
    got = df[df.metric == "AD"].set_index("image").loc[idx, "value"]
    torch.testing.assert_close(torch.tensor(got.values), want_ad.double(), atol=1e-6, rtol=0)
    assert (df[df.metric == "AD"].set_index("image").loc[idx, "target"].values == t.numpy()).all()
    # summary: IC = 100 * mean indicator, insertion plain mean, NaN (no box of class 2) skipped and counted
    s = summarize(df, wide=True)
    assert s.loc["Grad-CAM", "IC"] == pytest.approx(100 * df[df.metric == "IC"]["value"].mean())
    assert s.loc["Grad-CAM", "insertion"] == pytest.approx(df[df.metric == "insertion"]["value"].mean())
    energy = df[df.metric == "energy"]
    no_box = [(i % 2 == 1 and c == 2) for i, c in zip(energy["image"], energy["target"], strict=True)]
    assert energy["value"].isna().tolist() == no_box
    long = summarize(df).set_index(["method", "metric"])
    assert long.loc[("Grad-CAM", "energy"), "n_nan"] == sum(no_box)
    assert long.loc[("Grad-CAM", "AD"), "mean"] == pytest.approx(s.loc["Grad-CAM", "AD"])
    assert (long["ci_low"] <= long["mean"]).all() and (long["mean"] <= long["ci_high"]).all()
    assert df.attrs["summary"]["Grad-CAM"]["AD"] == pytest.approx(s.loc["Grad-CAM", "AD"])
    assert set(df.attrs["timings"]) == {"Grad-CAM"} and df.attrs["timings"]["Grad-CAM"] > 0
    pd.concat([df, df])  # attrs are plain dicts: pandas can compare them on concat


def test_crash_then_resume_gives_the_uninterrupted_table(tmp_path):
    full_cam, _ = counting_cam()
    full = evaluate(FakeBench(), methods=[full_cam], cache=tmp_path / "a", **RUN)

    crashing, calls = counting_cam(crash_at=3)  # 4 batches of 3, 3, 3, 1 images: dies in batch 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(FakeBench(), methods=[crashing], cache=tmp_path / "b", **RUN)
    folder = next((tmp_path / "b").iterdir())
    assert sorted(p.name for p in folder.glob("batch_*.json")) == ["batch_00000.json", "batch_00001.json"]

    resumed_cam, calls = counting_cam()
    resumed = evaluate(FakeBench(), methods=[resumed_cam], cache=tmp_path / "b", **RUN)
    assert calls["n"] == 2  # only the two missing batches were computed
    pd.testing.assert_frame_equal(resumed, full)
    assert resumed.attrs["summary"] == full.attrs["summary"]

    # a finished run re-run does no work: no method call, no image loaded
    again_cam, calls = counting_cam()
    bench = FakeBench()
    again = evaluate(bench, methods=[again_cam], cache=tmp_path / "b", **RUN)
    assert calls["n"] == 0 and bench.sample_calls == 0
    pd.testing.assert_frame_equal(again, full)


_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from test_evaluation import FakeBench, RUN, counting_cam
from cam_core.evaluation import evaluate
cam, _ = counting_cam()
class Slow(cam):
    def coefficients(self, ctx):
        time.sleep(1.5)
        return super().coefficients(ctx)
evaluate(FakeBench(), methods=[Slow], cache={cache!r}, **RUN)
"""


def test_killed_process_resumes_to_the_same_table(tmp_path):
    """SIGKILL a real run after two batches are on disk; the resumed table equals an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cache = tmp_path / "cache"
    code = _CHILD.format(tests=str(Path(__file__).parent), cache=str(cache))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while len(list(cache.glob("*/batch_*.json"))) < 2:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the child run wrote no batches in time"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    done = len(list(cache.glob("*/batch_*.json")))
    assert 2 <= done < 4
    cam, calls = counting_cam()
    resumed = evaluate(FakeBench(), methods=[cam], cache=cache, **RUN)
    assert calls["n"] == 4 - done
    cam, _ = counting_cam()
    pd.testing.assert_frame_equal(resumed, evaluate(FakeBench(), methods=[cam], cache=None, **RUN))


def test_stray_temp_and_broken_files_are_never_read_as_complete(tmp_path):
    cam, calls = counting_cam()
    full = evaluate(FakeBench(), methods=[cam], cache=tmp_path, **RUN)
    folder = next(tmp_path.iterdir())
    # a crash mid-write leaves only a temp file; a foreign truncated file must not be trusted either
    (folder / "batch_00002.json").unlink()
    (folder / ".batch_00002.json.abc123.tmp").write_text('{"index": [1, 2, 3], "rows": {"ima')
    text = (folder / "batch_00001.json").read_text()
    (folder / "batch_00001.json").write_text(text[: len(text) // 2])
    cam, calls = counting_cam()
    again = evaluate(FakeBench(), methods=[cam], cache=tmp_path, **RUN)
    assert calls["n"] == 2  # batches 1 and 2 recomputed, 0 and 3 read
    pd.testing.assert_frame_equal(again, full)
    assert json.loads((folder / "batch_00001.json").read_text())["index"] == FakeBench().subset(10, 3)[3:6]


def test_cache_key_depends_on_the_arguments(tmp_path):
    cam, _ = counting_cam()
    run = {**RUN, "metrics": ["IC"], "n_images": 4}
    evaluate(FakeBench(), methods=[cam], cache=tmp_path, **run)
    evaluate(FakeBench(), methods=[cam], cache=tmp_path, **{**run, "seed": 4})
    evaluate(FakeBench(), methods=[cam], cache=tmp_path, **{**run, "metrics": ["AD"]})
    evaluate(FakeBench(), methods=[cam], cache=tmp_path, **{**run, "baseline": "blur"})
    evaluate(FakeBench(), methods=[cam], cache=tmp_path, **run)  # same arguments: same folder
    assert len(list(tmp_path.iterdir())) == 4


def test_local_accuracy_is_zero_for_lift_cam_and_cosine_to_itself_is_one():
    df = evaluate(FakeBench(), methods=["LIFT-CAM", "Grad-CAM"], metrics=["local_accuracy", "cosine"],
                  reference="LIFT-CAM", n_images=6, batch_size=4, cache=None, progress=False)
    s = summarize(df, wide=True)
    assert s.loc["LIFT-CAM", "local_accuracy"] < 1e-4
    assert s.loc["Grad-CAM", "local_accuracy"] > 1e-3
    assert s.loc["LIFT-CAM", "cosine"] == pytest.approx(1.0)


def test_bad_arguments_are_explained():
    bench = FakeBench()
    with pytest.raises(ValueError, match="unknown metric 'accuracy'; valid names: IC, AD"):
        evaluate(bench, methods=[GradCAM], metrics=["accuracy"], cache=None)
    with pytest.raises(ValueError, match="target must be"):
        evaluate(bench, methods=[GradCAM], target="top5", cache=None)
    with pytest.raises(ValueError, match="unknown CAM method"):
        evaluate(bench, methods=["NoSuch-CAM"], cache=None)
    bench.multilabel = True
    with pytest.raises(ValueError, match="multi-label"):
        evaluate(bench, methods=[GradCAM], target="label", cache=None)


def test_target_label_explains_the_ground_truth():
    bench = FakeBench()
    df = evaluate(bench, methods=[GradCAM], metrics=["IC"], target="label", n_images=5, cache=None,
                  progress=False)
    for _, r in df.iterrows():
        assert r["target"] == int(bench.labels[r["image"]])


def test_results_save_load_roundtrip_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv(results.ENV_VAR, str(tmp_path))
    df = pd.DataFrame({"a": [1.0, math.nan], "b": ["x", "y"]})
    df.attrs["summary"] = {"m": {"IC": 1.5}}
    p = results.save("04_test", df)
    assert p == tmp_path / "04_test.csv" and not list(tmp_path.glob("*.tmp"))
    back = results.load("04_test")
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["summary"] == {"m": {"IC": 1.5}}
    results.save("numbers", {"wall_s": 12.5})
    assert results.load("numbers.json") == {"wall_s": 12.5}
    with pytest.raises(FileNotFoundError, match="no results named"):
        results.load("missing")
    with pytest.raises(ValueError, match="must be relative"):
        results.path("../escape")


def test_cli_prints_the_summary(tmp_path, monkeypatch, capsys):
    from cam_core import cli
    from cam_core.benchmarks import base

    monkeypatch.setitem(base._REGISTRY, "fake-test", base._Entry(f"{__name__}:_make_fake", "test"))
    out = tmp_path / "x.csv"
    rc = cli.main(["evaluate", "--benchmark", "fake-test", "--methods", "Grad-CAM", "--metrics", "IC",
                   "energy", "--n-images", "4", "--out", str(out), "--device", "cpu", "--cache", "none",
                   "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Grad-CAM" in printed and "energy" in printed
    assert len(pd.read_csv(out)) == 8 and (tmp_path / "x.summary.csv").is_file()
    assert cc.evaluate is evaluate


@pytest.mark.cuda
def test_cuda_run_matches_cpu():
    """Metrics and runner on CUDA: same table as on the CPU (to float tolerance), tensors stay on the GPU."""
    run = {**RUN, "metrics": METRICS + ["cosine"], "reference": "Grad-CAM", "cache": None}
    cpu = evaluate(FakeBench(), methods=[GradCAM], **run)
    gpu = evaluate(FakeBench(device="cuda"), methods=[GradCAM], device="cuda", **run)
    pd.testing.assert_frame_equal(gpu.drop(columns="value"), cpu.drop(columns="value"))
    ok = ((gpu["value"] - cpu["value"]).abs() < 1e-4) | (gpu["value"].isna() & cpu["value"].isna())
    ic = gpu["metric"] == "IC"  # an indicator may flip when O and Y tie to float precision
    assert bool((ok | ic).all()) and ok[ic].mean() > 0.9


def _make_fake(data_dir=None, device=None, **kw):
    return FakeBench()


@pytest.mark.parametrize("n", [0, -5])
def test_n_images_must_be_positive(n):
    with pytest.raises(ValueError, match=f"n_images must be a positive integer .* got {n}"):
        evaluate(FakeBench(), methods=[GradCAM], metrics=["IC"], n_images=n, cache=None, progress=False)


def test_more_images_than_the_benchmark_holds_is_an_error():
    with pytest.raises(ValueError, match="n_images=13, but fake holds 12 images"):
        evaluate(FakeBench(), methods=[GradCAM], metrics=["IC"], n_images=13, cache=None, progress=False)


def test_ctrl_c_says_what_is_cached_and_how_to_resume(tmp_path, monkeypatch):
    from cam_core.evaluation import runner as evaluation

    real, calls = evaluation._run_batch, []

    def interrupted_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_run_batch", interrupted_on_the_third_batch)
    run = dict(methods=[GradCAM], metrics=["IC"], n_images=12, batch_size=3, progress=False)
    with pytest.raises(evaluation.Interrupted, match=r"2 of 4 batches are cached in .*rerun the same"):
        evaluate(FakeBench(), cache=tmp_path, **run)
    monkeypatch.setattr(evaluation, "_run_batch", real)
    assert len(evaluate(FakeBench(), cache=tmp_path, **run)) == 12  # resumed: all 12 images
    calls.clear()
    monkeypatch.setattr(evaluation, "_run_batch", interrupted_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt, match="nothing is kept"):
        evaluate(FakeBench(), cache=None, **run)


def test_metric_names_are_case_insensitive_like_method_names():
    df = evaluate(FakeBench(), methods=["gradcam"], metrics=["ic", "Ad"], n_images=3, cache=None,
                  progress=False)
    assert set(df["metric"]) == {"IC", "AD"} and set(df["method"]) == {"Grad-CAM"}


def test_activation_shape_is_the_target_layers_maps():
    """K, h, w at the target layer ("3": the ReLU after the 6-channel conv on 12x12 images)."""
    assert FakeBench().activation_shape() == (6, 12, 12)


def test_cache_key_tells_tensors_apart_by_content():
    """A tensor argument (DeepSHAP-CAM's ``background``) enters the key by its contents: ``str`` of a
    large tensor is abbreviated, so two different backgrounds printed the same and shared a cache entry."""
    from cam_core.evaluation import cache_key

    a = torch.zeros(2000)
    b = a.clone()
    b[1000] = 1.0
    assert str(a) == str(b)  # the abbreviation the old key relied on
    key = lambda t: cache_key({"method_kwargs": {"DeepSHAP-CAM": {"background": t}}})
    assert key(a) != key(b)
    assert key(a) == key(a.clone())
