"""bench/run.py's pure helpers: the ratio, the median [min-max] spread, the load warning, the targets."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).parents[1] / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_timing_median_spread_and_per_image() -> None:
    t = bench.Timing(walls=(3.0, 1.0, 2.0), cpus=(1.5, 0.5, 1.0))
    assert (t.wall, t.cpu) == (2.0, 1.0)
    assert str(t) == "2 [1-3] (1 [0.5-1.5])"
    per = t.per(2)
    assert per.walls == (1.5, 0.5, 1.0) and per.cpu == 0.5
    assert bench.spread([0.1234]) == "0.123"  # one run: no spread to show


def test_ratio_of_medians() -> None:
    theirs = bench.Timing((10.0, 12.0, 30.0), (4.0, 5.0, 6.0))
    ours = bench.Timing((2.0, 4.0, 6.0), (1.0, 1.0, 9.0))
    assert bench.ratio(theirs, ours) == "3.00 (5.00)"  # 12 / 4 and 5 / 1


def test_targets_direction() -> None:
    assert bench.meets(1.2, ("<=", 1.3)) and not bench.meets(1.4, ("<=", 1.3))
    assert bench.meets(50.0, (">=", 50.0)) and not bench.meets(49.9, (">=", 50.0))
    assert bench.TARGETS["Ablation-CAM, best settings: pytorch-grad-cam / ours"] == (">=", 50.0)
    assert bench.TARGETS["SHAP-CAM per ordering, best settings: Captum / ours"] == (">=", 5.0)


@pytest.mark.parametrize(("before", "after", "busy"), [
    ((0.1, 0.2, 0.3), (2.2, 1.0, 0.5), False),  # quiet: after is just this run's 2 threads
    ((3.5, 3.0, 2.0), (5.0, 4.0, 3.0), True),  # other jobs before
    ((0.1, 0.1, 0.1), (6.0, 2.0, 1.0), True),  # other jobs started during the run
])
def test_load_warning(before, after, busy: bool) -> None:
    warning = bench.load_warning(before, after, cores=2, own_threads=2)
    assert (warning is not None) == busy
    if busy:
        assert "busy" in warning and f"{before[0]:.1f}" in warning


def test_quick_options_and_bad_values() -> None:
    args = bench.parse_args(["--quick", "--out", ""])
    assert (args.size, args.batch, args.repeat, args.maps, args.baseline_images) == (32, 2, 1, 8, 1)
    assert bench.parse_args(["--out", ""]).repeat == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeat", "0"])


@pytest.mark.slow
def test_quick_run_prints_both_rows_of_every_comparison() -> None:
    text = bench.run(bench.parse_args(["--quick", "--models", "resnet50", "--out", ""]))
    for comparison in ("Grad-CAM", "Ablation-CAM", "Score-CAM", "SHAP-CAM per ordering"):
        assert f"| {comparison} | equal |" in text and f"| {comparison} | best |" in text
    assert "Load average" in text and "| LIFT-CAM |" in text
