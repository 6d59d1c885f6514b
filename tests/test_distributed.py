"""The evaluation runner on Ray (a local cluster of 2 CPU workers): equal to serial, survives a killed
worker, resumes after an interrupted driver, shares the serial runner's cache."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import test_evaluation
from ray import cloudpickle
from test_evaluation import RUN, FakeBench, counting_cam

from cam_core.evaluation import evaluate
from cam_core.evaluation import ray_executor as distributed
from cam_core.methods.gradient import GradCAM


class SlowCAM(GradCAM):
    """Grad-CAM that sleeps per call and logs ``pid first-image`` to ``LOG`` (set per test)."""

    name = "Grad-CAM"
    LOG = ""
    DELAY = 0.4

    def coefficients(self, ctx):
        time.sleep(self.DELAY)
        with open(self.LOG, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().coefficients(ctx)


@pytest.fixture(scope="module")
def cluster():
    # the test modules are not importable on the workers: ship their classes by value
    for mod in (sys.modules[__name__], test_evaluation):
        cloudpickle.register_pickle_by_value(mod)
    distributed.connect(None, num_cpus=2, log_to_driver=False)  # ray.init(..., include_dashboard=False)
    yield ray
    ray.shutdown()
    for mod in (sys.modules[__name__], test_evaluation):
        cloudpickle.unregister_pickle_by_value(mod)


def _pids(path: Path) -> list[int]:
    """The pid of each SlowCAM call, in order."""
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["image", "method", "metric"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)


def test_ray_equals_serial_for_any_shard_size_and_shares_the_cache(cluster, tmp_path):
    cam, _ = counting_cam()
    serial = evaluate(FakeBench(), methods=[cam], cache=None, **RUN)  # 4 batches of 3, 3, 3, 1
    for shard in (1, 5, 100):  # one batch per task, two, all in one
        df = evaluate(FakeBench(), methods=[cam], cache=tmp_path / f"s{shard}", executor="ray",
                      shard_size=shard, **RUN)
        _same(df, serial)
        want = -(-4 // max(1, -(-shard // 3)))
        assert df.attrs["executor"]["shards"] == want
        assert sum(df.attrs["executor"]["computed"].values()) == 4
        assert set(df.attrs["timings"]) == {"Grad-CAM"}
    # the serial runner resumes from (here: finds complete) the cache the Ray run wrote
    again, calls = counting_cam()
    rerun = evaluate(FakeBench(), methods=[again], cache=tmp_path / "s5", **RUN)
    assert calls["n"] == 0
    _same(rerun, serial)
    # and Ray without a cache folder
    _same(evaluate(FakeBench(), methods=[cam], cache=None, executor="ray", **RUN), serial)


def test_a_worker_killed_mid_shard_loses_nothing(cluster, tmp_path):
    run = dict(RUN, n_images=16, batch_size=2)  # 8 batches; 2 shards of 4 batches, one per worker
    cam, _ = counting_cam()
    serial = evaluate(FakeBench(16), methods=[cam], cache=None, **run)
    log = tmp_path / "calls.log"
    SlowCAM.LOG = str(log)
    killed: list[int] = []

    def kill_a_busy_worker():  # the first worker to start its second batch (its first is in the cache)
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = _pids(log)
            busy = [p for p in set(pids) if pids.count(p) >= 2]
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        df = evaluate(FakeBench(16), methods=[SlowCAM], cache=tmp_path / "c", executor="ray",
                      shard_size=8, **run)
    finally:
        killer.join()
    assert killed, "no worker was killed: the test did not exercise a retry"
    _same(df, serial)
    folder = Path(df.attrs["cache"])
    files = sorted(folder.glob("batch_*.json"))
    assert len(files) == 8 and all(json.loads(f.read_text())["rows"] for f in files)  # complete files only
    calls = _pids(log)
    # 8 batches; the killed worker's batch in progress is computed again, nothing else is
    assert 8 <= len(calls) <= 9
    assert calls.count(killed[0]) == 2
    where = df.attrs["executor"]["workers"]
    assert sum(where.values()) == 2 and not any(w.endswith(f"pid {killed[0]}") for w in where)


def test_an_interrupted_driver_resumes_from_the_cache(cluster, tmp_path, monkeypatch):
    # 12 batches on 2 workers: when the first shard reports, at most the two running ones (and the two
    # started as they freed up) can still finish, so work is always left (with 4 batches, a quiet
    # machine finished every one before the interrupt landed)
    run, n_batches = {**RUN, "n_images": 36}, 12
    cam, _ = counting_cam()
    serial = evaluate(FakeBench(n=36), methods=[cam], cache=None, **run)
    SlowCAM.LOG = str(tmp_path / "calls.log")

    class CtrlC:  # the progress bar: Ctrl-C arrives when the first shard is done
        def __init__(self, *args):
            pass

        def update(self, n):
            raise KeyboardInterrupt("simulated Ctrl-C")

        def close(self):
            pass

    monkeypatch.setattr(distributed, "_progress", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        evaluate(FakeBench(n=36), methods=[SlowCAM], cache=tmp_path, executor="ray", shard_size=3, **run)
    monkeypatch.undo()
    time.sleep(1.0)  # a cancelled shard already running may still finish its batch: both are fine
    folder = next(tmp_path.glob("fake_*"))
    done = len(list(folder.glob("batch_*.json")))
    assert 1 <= done < n_batches
    df = evaluate(FakeBench(n=36), methods=[SlowCAM], cache=tmp_path, executor="ray", shard_size=3, **run)
    _same(df, serial)
    assert sum(df.attrs["executor"]["computed"].values()) == n_batches - done


def test_executor_arguments_are_checked(tmp_path, monkeypatch):
    cam, _ = counting_cam()
    with pytest.raises(ValueError, match="executor must be"):
        evaluate(FakeBench(), methods=[cam], cache=None, executor="dask", **RUN)
    with pytest.raises(ValueError, match="pass executor='ray'"):
        evaluate(FakeBench(), methods=[cam], cache=None, ray_address="auto", **RUN)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[distributed\]'"):
        evaluate(FakeBench(), methods=[cam], cache=None, executor="ray", **RUN)


def test_the_command_line_takes_the_executor():
    from cam_core.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--executor", "ray", "--ray-address", "auto",
                                      "--shard-size", "64"])
    assert (args.executor, args.ray_address, args.shard_size) == ("ray", "auto", 64)
    assert build_parser().parse_args(["evaluate"]).executor == "serial"
