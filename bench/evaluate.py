"""Evaluation runner throughput against its bound: images per second of the default Tables 3-5 workload.

    .venv/bin/python bench/evaluate.py               # shapes-single (VGG-style), serial, Ray 1 and 2 workers
    .venv/bin/python bench/run.py --evaluate         # the same, from the speed benchmark's entry point
    .venv/bin/python bench/evaluate.py --quick       # a tiny run to check that it works

The workload is ``cc.evaluate``'s defaults on the embedded benchmark: the paper's six methods,
every default metric (IC/AD/ADD, insertion/deletion with 40 steps, energy and hit/miss pointing,
local accuracy), default batch sizes, no cache. Its lower bound is the forward passes the metrics
need per image, ``n_methods * (2 + 2 * (steps + 1)) + 1`` (per method: s*x and (1-s)*x for IC/AD/ADD
and the two curves; once per image: x itself), times the time of one forward pass per image at the
best batch size, measured here. ``actual / bound`` says how far the runner is from that limit (the
methods' own passes, Score-CAM's K masked forwards above all, and the bookkeeping make up the rest).

Each configuration first runs on one image per worker, untimed (warm-up: imports, traced splits;
Ray's workers import torch and unpack the benchmark), then once timed; times are wall seconds and
CPU seconds (the serial process's, or the sum over Ray's workers). The machine's load average is
recorded before and after: on a machine shared with other jobs, CPU seconds are the steadier
measure, and wall seconds are only comparable within a run.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import os
import platform
import sys
import time
from pathlib import Path

import torch

import cam_core as cc
from cam_core.evaluation import DEFAULT_METRICS, evaluate
from cam_core.evaluation import ray_executor as distributed
from cam_core.methods.base import eval_mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", default="shapes-single")
    p.add_argument("--arch", default="vgg")
    p.add_argument("--n-images", type=int, default=64, help="images per timed run (default 64)")
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated evaluate batch sizes to time serially besides the default")
    p.add_argument("--workers", default="1,2", help="Ray local-cluster sizes (comma-separated; '' to skip)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of this process (the bound and the serial runs; default: torch's)")
    p.add_argument("--quick", action="store_true", help="8 images, 2 methods: checks that it works")
    p.add_argument("--out", default="results/bench_evaluate.md", help="markdown file ('' to skip)")
    return p.parse_args(argv)


def forward_time(model: torch.nn.Module, x: torch.Tensor, batch_sizes: list[int], repeat: int = 3) -> dict:
    """Seconds per image of one no-grad forward pass, per batch size: {B: (wall, cpu)}, best of ``repeat``.

    Fed as the metrics feed it (eval mode, channels-last on the CPU)."""
    out = {}
    with torch.no_grad(), eval_mode(model):
        for b in batch_sizes:
            xs = x[torch.arange(b) % x.shape[0]]
            if xs.device.type == "cpu":
                xs = xs.contiguous(memory_format=torch.channels_last)
            model(xs)  # warm-up
            best = (float("inf"), float("inf"))
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                model(xs)
                if xs.device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, ((time.perf_counter() - t0) / b, (time.process_time() - c0) / b))
            out[b] = best
    return out


def timed(run) -> tuple[float, float, dict]:
    """(wall s, CPU s, attrs) of ``run()``: CPU of this process, or of Ray's workers when it used Ray."""
    t0, c0 = time.perf_counter(), time.process_time()
    df = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if "executor" in df.attrs:
        cpu += df.attrs["executor"]["cpu_s"]
    return wall, cpu, df


def load_average() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    bench = cc.benchmarks.load(args.benchmark, device=args.device, arch=args.arch)
    methods = ["Grad-CAM", "LIFT-CAM"] if args.quick else list(cc.PAPER_METHODS)
    n = 8 if args.quick else args.n_images
    steps = 40
    default_batch = inspect.signature(evaluate).parameters["batch_size"].default
    run_kw = dict(methods=methods, metrics=DEFAULT_METRICS, n_images=n, seed=0, cache=None, progress=False)

    # ---- the bound --------------------------------------------------------------------------------
    x = next(iter(bench.images(n=16, seed=0, batch_size=16))).x
    fwd = forward_time(bench.model, x, [8, 16, 32, 64, 128, 256] if not args.quick else [4, 16])
    best_b = min(fwd, key=lambda b: fwd[b][1])
    passes = len(methods) * (2 + 2 * (steps + 1)) + 1
    bound_wall, bound_cpu = passes * fwd[best_b][0], passes * fwd[best_b][1]

    say(f"# Evaluation throughput: {bench.name} ({bench.arch}), {len(methods)} methods, default metrics")
    say()
    say(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} with "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {bench.device}; {n} images per timed run.")
    say(f"Load average (1, 5, 15 min) before: {load_before}. This machine is shared with other jobs "
        "(the load above its core count says how busy): CPU seconds are the steadier figure.")
    say()
    say("## The bound: forward passes the metrics need")
    say()
    say(f"Per image: {len(methods)} methods x (2 for IC/AD/ADD + 2 x {steps + 1} for insertion and "
        f"deletion) + 1 (the image itself) = **{passes} forward passes**.")
    say()
    say("| forward batch | ms per image (wall) | ms per image (CPU) |")
    say("|---:|---:|---:|")
    for b, (w, c) in fwd.items():
        say(f"| {b}{' (best)' if b == best_b else ''} | {1e3 * w:.3f} | {1e3 * c:.3f} |")
    say()
    say(f"Bound: {passes} x {1e3 * fwd[best_b][1]:.3f} ms = **{bound_cpu:.3f} CPU s per image** "
        f"({bound_wall:.3f} wall s), i.e. {1 / bound_cpu:.2f} images per CPU second.")
    say()

    # ---- serial, at the default and at other batch sizes --------------------------------------------
    say("## Serial (this process)")
    say()
    say("| settings | wall s | CPU s | images/s (wall) | CPU s per image | actual / bound (CPU) | (wall) |")
    say("|---|---:|---:|---:|---:|---:|---:|")
    others = [int(b) for b in (args.batch_sizes or "").split(",") if b]
    sizes = [default_batch] + [b for b in others if b != default_batch]
    serial = {}
    for bs in sizes:
        kw = dict(run_kw, batch_size=bs)
        evaluate(bench, **dict(kw, n_images=1))  # warm-up (one-time set-up: imports, traced splits)
        wall, cpu, _ = timed(lambda kw=kw: evaluate(bench, **kw))
        serial[bs] = (wall, cpu)
        name = f"batch_size={bs}" + (" (default)" if bs == default_batch else "")
        say(f"| {name} | {wall:.1f} | {cpu:.1f} | {n / wall:.2f} | {cpu / n:.3f} | "
            f"{cpu / n / bound_cpu:.2f} | {wall / n / bound_wall:.2f} |")
    say()

    # ---- Ray: local clusters of 1 and 2 workers ------------------------------------------------------
    workers = [int(w) for w in args.workers.split(",") if w]
    if workers:
        import ray

        say("## Ray (a local cluster on this machine; one task per batch, one CPU slot and one thread each)")
        say()
        say("| workers | wall s | CPU s (workers) | images/s (wall) | vs serial (wall) | actual/bound CPU |")
        say("|---:|---:|---:|---:|---:|---:|")
        wall_serial = serial[default_batch][0]
        for k in workers:
            if ray.is_initialized():
                ray.shutdown()
            distributed.connect(None, num_cpus=k, log_to_driver=False)
            kw = dict(run_kw, executor="ray")
            evaluate(bench, **dict(kw, n_images=k, batch_size=1))  # warm-up: one task per worker starts it
            wall, cpu, df = timed(lambda kw=kw: evaluate(bench, **kw))
            say(f"| {k} | {wall:.1f} | {cpu:.1f} | {n / wall:.2f} | {wall_serial / wall:.2f}x | "
                f"{cpu / n / bound_cpu:.2f} |")
            say(f"|  | {df.attrs['executor']['log']} | | | | |")
            ray.shutdown()
        say()
    say(f"Load average after: {load_average()}.")
    say(f"Reproduce: `.venv/bin/python bench/evaluate.py {' '.join(sys.argv[1:])}`")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
