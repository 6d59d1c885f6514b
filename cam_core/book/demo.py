"""The ``demo`` command: explain a few test images with every CAM method and write one figure.

    python -m cam_core demo --out results/demo.png [--benchmark shapes-single --arch vgg --n 4]

On a fresh clone this loads the committed model (or trains it, a few minutes on a CPU), takes
``n`` seeded test images, explains the model's top class with each method of ``cc.METHODS``, and
draws a grid (rows: images, columns: methods) with the images' boxes, those of the explained
class highlighted.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def explain(bench: Any, x: Tensor, methods: list[str] | None = None,
            target: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor, dict[str, float]]:
    """Saliency maps (N, H, W) of every method for the images ``x`` (the model's input space), the
    explained classes (N,), and each method's seconds. ``methods`` defaults to all of ``cc.METHODS``
    that apply to the model (e.g. CAM needs a GAP + linear head; the others are skipped with a note)."""
    from cam_core.methods.registry import METHODS, get_method

    names = list(METHODS) if methods is None else methods
    model = bench.model
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)  # (N,) the model's top class
    saliency: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        try:
            cam = get_method(name, model, bench.target_layer)
            saliency[name] = cam(x, target).saliency.cpu()  # (N, H, W)
        except ValueError as err:
            if methods is not None:  # asked for by name: say why it cannot run
                raise
            print(f"skipping {name}: {str(err).split(';')[0]}", file=sys.stderr)
            continue
        seconds[name] = time.perf_counter() - start
    return saliency, target.cpu(), seconds


def run_demo(out: str | Path = "results/demo.png", benchmark: str = "shapes-single", arch: str = "vgg",
             n: int = 4, seed: int = 0, device: str = "auto", data_dir: str | None = None,
             methods: list[str] | None = None) -> Path:
    """Load ``benchmark`` (training its model if missing), explain ``n`` test images, save the figure."""
    from cam_core.benchmarks import load
    from cam_core.plotting import save_figure, show_explanations

    bench = load(benchmark, data_dir=data_dir, device=device, arch=arch)
    batch = next(bench.images(n=n, seed=seed, batch_size=n))
    saliency, target, seconds = explain(bench, batch.x, methods)
    with torch.no_grad():
        prob = (torch.sigmoid if bench.multilabel else lambda z: z.softmax(1))(bench.model(batch.x)).cpu()
    titles = [f"{bench.class_names[int(t)]} ({float(prob[i, t]):.2f})" for i, t in enumerate(target)]
    fig = show_explanations(batch.x, saliency, boxes=[b.cpu() for b in batch.boxes], titles=titles,
                            box_labels=[b.cpu() for b in batch.box_labels], targets=target,
                            mean=bench.mean, std=bench.std)
    fig.suptitle(f"{benchmark} / {arch}: the model's top class explained (boxes of that class in green)",
                 fontsize=8, y=1.0)
    path = save_figure(fig, out)
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items())
    print(f"wrote {path} ({n} images x {len(saliency)} methods: {timing})", flush=True)
    return path


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="explain a few images with every method and write a figure",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/demo.png", help="figure path (default: results/demo.png)")
    p.add_argument("--benchmark", default="shapes-single", help="a name from cam_core.benchmarks.available()")
    p.add_argument("--arch", default="vgg", choices=["vgg", "resnet"])
    p.add_argument("--n", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None, help="where the benchmark's data lives (default: repo data/)")
    p.add_argument("--methods", nargs="*", default=None, help="method names (default: all of cc.METHODS)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.n < 1:
        print("error: --n must be at least 1", file=sys.stderr)
        return 2
    try:
        run_demo(args.out, args.benchmark, args.arch, args.n, args.seed, args.device, args.data_dir,
                 args.methods)
    except ValueError as err:  # bad names / paths: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
