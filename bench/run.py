"""Speed of cam_core's methods, and of the independent implementations they replace.

    .venv/bin/python bench/run.py                      # VGG16 + ResNet50, 224 px, batch 8, auto device
    .venv/bin/python bench/run.py --quick              # a tiny run (64 px, batch 2) to check it works
    .venv/bin/python bench/run.py --device cuda --baseline-images 8
    .venv/bin/python bench/run.py --evaluate           # cc.evaluate's throughput (bench/evaluate.py)

Prints, per model: each method's time per image as a ratio to our Grad-CAM in the same run; our
Grad-CAM / Score-CAM / Ablation-CAM beside pytorch-grad-cam's; our SHAP-CAM per ordering beside
Captum's ShapleyValueSampling on the same head (one feature group per map, 64 perturbations per
eval). Writes the same markdown to ``results/bench.md`` (``--out``). Models are torchvision's with
``weights=None`` under a fixed seed: speed does not depend on the weights.

Methods that run the whole model once per map (our Score-CAM, pytorch-grad-cam's Score-CAM and
Ablation-CAM) run on ``--baseline-images`` images (default: 1 on the CPU, the whole batch on CUDA)
and are compared per image; on 2 CPU cores each of them takes ~1.5 min per VGG16 image at 224 px.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's per-batch progress bars

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import cam_core as cc  # noqa: E402

LAYERS = {"vgg16": "features.29", "resnet50": "layer4"}
#: our methods that run the full model once per map: timed on --baseline-images images
PER_MAP_FULL_MODEL = {"Score-CAM"}
TARGETS = {  # the speed targets, checked in the printed notes
    "LIFT-CAM / Grad-CAM": "<= 1.3",
    "Grad-CAM: pytorch-grad-cam / ours": ">= 1",
    "Ablation-CAM: pytorch-grad-cam / ours": ">= 20",
    "SHAP-CAM per ordering: Captum / ours": ">= 5",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--models", default="vgg16,resnet50", help="comma-separated: vgg16,resnet50")
    p.add_argument("--methods", default=None, help="comma-separated table names (default: all of cc.METHODS)")
    p.add_argument("--baseline-images", type=int, default=None,
                   help="images for the per-map full-model runs (default: 1 on CPU, --batch on CUDA)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs per entry, median kept (default 3; 1 with --quick)")
    p.add_argument("--shap-orderings", type=int, default=20, help="orderings for our SHAP-CAM timing")
    p.add_argument("--captum-orderings", type=int, default=None,
                   help="orderings for Captum's ShapleyValueSampling (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--no-baselines", action="store_true", help="skip pytorch-grad-cam and Captum")
    p.add_argument("--quick", action="store_true",
                   help="tiny run: 32 px, batch 2, 1 repeat, 1 baseline image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench.md", help="markdown file to write ('' to skip)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch = 32, 2
        args.repeat = args.repeat or 1
        args.baseline_images = args.baseline_images or 1
        args.shap_orderings = min(args.shap_orderings, 4)
    args.repeat = args.repeat or 3
    return args


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # process CPU seconds (all threads)

    def per(self, n: float) -> Timing:
        return Timing(self.wall / n, self.cpu / n)

    def __str__(self) -> str:
        return f"{self.wall:.3g} ({self.cpu:.3g})"


def ratio(a: Timing, b: Timing) -> str:
    """``a / b`` for wall and CPU time: ``"2.1 (2.0)"``."""
    return f"{a.wall / b.wall:.2f} ({a.cpu / b.cpu:.2f})"


def timed(fn: Callable[[], object], device: torch.device, repeat: int, warmup: bool = True) -> Timing:
    """Median wall and CPU time of ``fn()`` over ``repeat`` runs, after a warm-up run (lazy initialisation,
    allocator, cuDNN autotuning) unless ``warmup=False`` (the minutes-long per-map full-model runs)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warmup:
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus))


def build_model(arch: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None).eval().to(device)


def make_method(name: str, model: nn.Module, layer: str, shap_orderings: int, seed: int) -> cc.BaseCAM:
    if name == "SHAP-CAM":
        return cc.METHODS[name](model, layer, n_orderings=shap_orderings, seed=seed)
    return cc.METHODS[name](model, layer)


def bench_ours(args, arch, model, x, device) -> tuple[list[dict], dict[str, Timing]]:
    """Per-image time of each of our methods: table rows and {name: Timing per image}."""
    layer = LAYERS[arch]
    names = args.methods.split(",") if args.methods else list(cc.METHODS)
    unknown = [n for n in names if n not in cc.METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; available: {', '.join(cc.METHODS)}")
    if "Grad-CAM" not in names:
        names = ["Grad-CAM", *names]
    per_image: dict[str, Timing] = {}
    rows = []
    for name in names:
        if name == "CAM" and arch != "resnet50":
            continue  # CAM needs a global-average-pool + linear head
        method = make_method(name, model, layer, args.shap_orderings, args.seed)
        slow = name in PER_MAP_FULL_MODEL
        xs = x[: args.baseline_images] if slow else x
        t = timed(lambda m=method, xs=xs: m(xs), device, 1 if slow else args.repeat, warmup=not slow)
        per_image[name] = t.per(len(xs))
        note = f"P = {args.shap_orderings} orderings" if name == "SHAP-CAM" else ""
        rows.append({"method": name, "images": len(xs), "t": per_image[name], "note": note})
        print(f"  {arch:9s} {name:13s} {per_image[name]} s/image", flush=True)
    for row in rows:
        row["ratio"] = ratio(row["t"], per_image["Grad-CAM"])
    return rows, per_image


def bench_pytorch_grad_cam(args, arch, model, x, device, target) -> dict[str, tuple[int, Timing]]:
    """pytorch-grad-cam's Grad-CAM (whole batch), Score-CAM and Ablation-CAM (baseline images)."""
    from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    chosen = args.methods.split(",") if args.methods else None
    out = {}
    for name, cls, n in [("Grad-CAM", GradCAM, len(x)), ("Score-CAM", ScoreCAM, args.baseline_images),
                         ("Ablation-CAM", AblationCAM, args.baseline_images)]:
        if chosen and name not in chosen and name != "Grad-CAM":
            continue
        twin = copy.deepcopy(model)  # it calls model.eval() and swaps layers: its own copy
        cam = cls(twin, [dict(twin.named_modules())[LAYERS[arch]]])
        if name == "Score-CAM":
            cam.batch_size = 64  # its default is 16; give it the same batching as ours
        targets = [ClassifierOutputTarget(int(t)) for t in target[:n]]
        cheap = name == "Grad-CAM"
        run_cam = lambda c=cam, xs=x[:n], t=targets: c(xs, targets=t)
        out[name] = (n, timed(run_cam, device, args.repeat if cheap else 1, warmup=cheap).per(n))
        cam.activations_and_grads.release()
        print(f"  {arch:9s} pytorch-grad-cam {name:13s} {out[name][1]} s/image", flush=True)
        del twin, cam
    return out


def bench_shap(args, arch, model, x, device) -> tuple[Timing, Timing, int] | None:
    """Seconds per ordering per image on the head: ours, Captum's, and Captum's image count."""
    if "SHAP-CAM" not in cc.METHODS:
        return None
    from captum.attr import ShapleyValueSampling

    body, head = cc.split_model(model, LAYERS[arch])
    with torch.no_grad():
        a = body(x)  # (N, K, h, w)
        target = head(a).argmax(1)
    n, k = a.shape[:2]
    p_ours = args.shap_orderings
    ours = timed(lambda: cc.shapley.permutation(head, a, target, p_ours, seed=args.seed), device, args.repeat)
    n_captum = args.baseline_images
    p_captum = args.captum_orderings or (5 if device.type == "cuda" else 1)
    mask = torch.arange(k, device=device).view(1, k, 1, 1).repeat(1, 1, *a.shape[2:])  # one group per map

    def captum_run() -> None:
        with torch.no_grad():
            ShapleyValueSampling(head).attribute(a[:n_captum], target=target[:n_captum], feature_mask=mask,
                                                 n_samples=p_captum, perturbations_per_eval=64)

    theirs = timed(captum_run, device, 1, warmup=False)
    return ours.per(p_ours * n), theirs.per(p_captum * n_captum), n_captum


def run(args: argparse.Namespace) -> str:
    device = cc.resolve_device(args.device)
    if args.baseline_images is None:
        args.baseline_images = args.batch if device.type == "cuda" else 1
    args.baseline_images = max(1, min(args.baseline_images, args.batch))
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    lines = [
        "# cam_core speed benchmark",
        "",
        f"`{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` on {dev_name}, torch {torch.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
        f"{args.size} px, batch {args.batch}, random torchvision weights (seed {args.seed}); median of "
        f"{args.repeat} run(s) after a warm-up run. Per-map full-model methods on {args.baseline_images} "
        "image(s), compared per image. Times are wall seconds, and in brackets process CPU seconds "
        "(less sensitive to other jobs on a shared CPU machine; on CUDA only the host's share).",
        "",
    ]
    checks: list[str] = []
    for arch in args.models.split(","):
        if arch not in LAYERS:
            raise SystemExit(f"unknown model {arch!r}; choose from {', '.join(LAYERS)}")
        print(f"{arch} at {LAYERS[arch]} ...", flush=True)
        model = build_model(arch, args.seed, device)
        rows, ours = bench_ours(args, arch, model, x, device)
        lines += [f"## {arch} (target layer `{LAYERS[arch]}`)", "",
                  "| method | images | s / image | ratio to our Grad-CAM | note |", "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['images']} | {r['t']} | {r['ratio']} | {r['note']} |" for r in rows]
        lines.append("")
        if "LIFT-CAM" in ours:
            checks.append(f"{arch}: LIFT-CAM / Grad-CAM = {ratio(ours['LIFT-CAM'], ours['Grad-CAM'])} "
                          f"(target {TARGETS['LIFT-CAM / Grad-CAM']})")
        if not args.no_baselines:
            with torch.no_grad():
                target = model(x).argmax(1)
            theirs = bench_pytorch_grad_cam(args, arch, model, x, device, target)
            lines += ["| method | ours, s / image | pytorch-grad-cam, s / image (images) | speed-up |",
                      "|---|---|---|---|"]
            for name, (n, t) in theirs.items():
                if name in ours:
                    lines.append(f"| {name} | {ours[name]} | {t} ({n}) | {ratio(t, ours[name])} |")
                    key = f"{name}: pytorch-grad-cam / ours"
                    if key in TARGETS:
                        checks.append(f"{arch}: {key} = {ratio(t, ours[name])} (target {TARGETS[key]})")
            lines.append("")
            shap = bench_shap(args, arch, model, x, device)
            if shap is not None:
                o, c, nc = shap
                lines += ["| SHAP-CAM, s per ordering per image | ours (cc.shapley.permutation) | "
                          "Captum ShapleyValueSampling (images) | speed-up |", "|---|---|---|---|",
                          f"| {arch} head | {o} | {c} ({nc}) | {ratio(c, o)} |", ""]
                key = "SHAP-CAM per ordering: Captum / ours"
                checks.append(f"{arch}: {key} = {ratio(c, o)} (target {TARGETS[key]})")
        del model
    lines += ["## Against the issue's targets (wall, and CPU in brackets)", ""]
    lines += [f"- {c}" for c in checks] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--evaluate" in argv:  # the evaluation runner's throughput instead: bench/evaluate.py and its options
        from evaluate import main as evaluate_main

        evaluate_main([a for a in argv if a != "--evaluate"])
        return
    args = parse_args(argv)
    text = run(args)
    print()
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
