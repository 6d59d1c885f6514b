"""Speed of cam_core's methods, and of the independent implementations they replace.

    .venv/bin/python bench/run.py                      # VGG16 + ResNet50, 224 px, batch 8, auto device
    .venv/bin/python bench/run.py --quick              # a tiny run (32 px, batch 2, 8 maps) to check it works
    .venv/bin/python bench/run.py --device cuda --baseline-images 8
    .venv/bin/python bench/run.py --evaluate           # cc.evaluate's throughput (bench/evaluate.py)

Prints, per model: every method of ``cc.METHODS`` as seconds per image and as a ratio to our Grad-CAM
in the same run; then four comparisons, each in two rows. **Equal settings**: the same images, batch,
warm-up and repeats for both sides, parameters frozen on both, and our generic algorithm (the
first-Linear shortcut off). **Best settings**: each side at its own best (our shortcuts on). Our
Grad-CAM / Ablation-CAM / Score-CAM face pytorch-grad-cam's, our SHAP-CAM faces Captum's
``ShapleyValueSampling`` on the same head (one feature group per map). Every timing is a warm-up run
then ``--repeat`` runs, reported as the median and the [min-max] spread, in wall and process-CPU
seconds. The header gives the load average before and after and warns when the machine was busy.
Writes the same markdown to ``results/bench.md`` (``--out``). Models are torchvision's with
``weights=None`` under a fixed seed: speed does not depend on the weights.

Methods that run the whole model once per map (our Score-CAM, pytorch-grad-cam's Score-CAM and
Ablation-CAM) run on ``--baseline-images`` images and, with ``--maps M``, score only the first ``M``
of the ``K`` maps (a VGG16 image at 224 px costs ~1.5 min per side and run on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import inspect
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's per-batch progress bars

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import cam_core as cc  # noqa: E402
from cam_core.methods.base import CAMContext  # noqa: E402

LAYERS = {"vgg16": "features.29", "resnet50": "layer4"}
#: our methods that run the full model once per map: timed on --baseline-images images (and --maps maps)
PER_MAP_FULL_MODEL = {"Score-CAM"}
#: the project's speed targets (issues 15 and 16), checked at the end of the output
TARGETS = {
    "LIFT-CAM / Grad-CAM": ("<=", 1.3),
    "Grad-CAM, best settings: pytorch-grad-cam / ours": (">=", 1.0),
    "Ablation-CAM, best settings: pytorch-grad-cam / ours": (">=", 50.0),
    "Score-CAM, best settings: pytorch-grad-cam / ours": (">=", 1.0),
    "SHAP-CAM per ordering, best settings: Captum / ours": (">=", 5.0),
}
#: batch (rows per forward) of the equal-settings rows: pytorch-grad-cam's Ablation-CAM default, and
#: 64 for the others (our default for Score-CAM; Captum's perturbations_per_eval in the old bench)
EQUAL_BATCH = {"Ablation-CAM": 32, "Score-CAM": 64, "SHAP-CAM": 64}
#: pytorch-grad-cam at its best: its defaults (Score-CAM batch 16, Ablation-CAM batch 32), frozen weights
THEIR_BEST_BATCH = {"Ablation-CAM": 32, "Score-CAM": 16}
#: Captum's ShapleyValueSampling at its best: perturbations per forward, the fastest of 64 / 256 / 1024 in
#: one run each of one ordering on a busy 2-core machine (VGG16: 20.0 / 13.5 / 10.9 CPU s; ResNet50: 68 /
#: 94 / - CPU s); a rough choice: in the recorded run 1024 was no faster than 64 on VGG16
CAPTUM_BEST_PPE = {"vgg16": 1024, "resnet50": 64}
#: a 1-minute load average above this fraction of the cores, from jobs other than this run, is "busy"
BUSY_FRACTION = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--models", default="vgg16,resnet50", help="comma-separated: vgg16,resnet50")
    p.add_argument("--methods", default=None, help="comma-separated table names (default: all of cc.METHODS)")
    p.add_argument("--baseline-images", type=int, default=None,
                   help="images for the per-map full-model runs and the baselines' slow sides "
                        "(default: 1 on CPU, --batch on CUDA)")
    p.add_argument("--maps", type=int, default=None,
                   help="score only the first M maps in the per-map full-model runs (default: all K)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs per entry after one warm-up run; median and min-max kept "
                        "(default 3; 1 with --quick)")
    p.add_argument("--shap-orderings", type=int, default=20,
                   help="orderings of our SHAP-CAM in the methods table and its best-settings row")
    p.add_argument("--captum-orderings", type=int, default=None,
                   help="orderings for Captum's ShapleyValueSampling and the equal-settings SHAP row "
                        "(default 1 on CPU, 5 on CUDA)")
    p.add_argument("--samples", type=int, default=64,
                   help="samples of the sampling methods (n_samples, e.g. LIME-CAM / KernelSHAP-CAM)")
    p.add_argument("--no-baselines", action="store_true", help="skip pytorch-grad-cam and Captum")
    p.add_argument("--quick", action="store_true",
                   help="tiny run: 32 px, batch 2, 1 repeat, 1 baseline image, 8 maps, 4 orderings, "
                        "8 samples")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, one per core); 1 is steadier on a busy machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench.md", help="markdown file to write ('' to skip)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch = 32, 2
        args.repeat = 1 if args.repeat is None else args.repeat
        args.baseline_images = args.baseline_images or 1
        args.maps = args.maps or 8
        args.shap_orderings = min(args.shap_orderings, 4)
        args.samples = min(args.samples, 8)
    args.repeat = 3 if args.repeat is None else args.repeat
    if args.repeat < 1 or (args.maps is not None and args.maps < 1):
        p.error("--repeat and --maps must be >= 1")
    return args


# ---- pure helpers (tested in tests/test_bench.py) ---------------------------------------------------
class Timing(NamedTuple):
    """Seconds of each timed run (after the warm-up): wall and process CPU (all threads)."""

    walls: tuple[float, ...]
    cpus: tuple[float, ...]

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    def per(self, n: float) -> Timing:
        return Timing(tuple(w / n for w in self.walls), tuple(c / n for c in self.cpus))

    def __str__(self) -> str:
        return f"{spread(self.walls)} ({spread(self.cpus)})"


def spread(values: Sequence[float]) -> str:
    """``"median [min-max]"`` of ``values`` (3 significant digits); just the value for one run."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.3g}"
    return f"{med:.3g} [{min(values):.3g}-{max(values):.3g}]"


def ratio(a: Timing, b: Timing) -> str:
    """``a / b`` of the medians, wall and CPU: ``"2.10 (2.00)"``."""
    return f"{a.wall / b.wall:.2f} ({a.cpu / b.cpu:.2f})"


def meets(value: float, target: tuple[str, float]) -> bool:
    op, bound = target
    return value <= bound if op == "<=" else value >= bound


def load_warning(before: Sequence[float], after: Sequence[float], cores: int, own_threads: int) -> str | None:
    """A warning when other jobs loaded the machine: the 1-minute load average before the run, or after
    it less this run's own threads, above ``BUSY_FRACTION`` of the cores. None on a quiet machine."""
    others = max(before[0], after[0] - own_threads)
    if others <= BUSY_FRACTION * cores:
        return None
    return (f"**Warning: the machine was busy** (1-minute load average {before[0]:.1f} before, "
            f"{after[0]:.1f} after, on {cores} cores; this run adds about {own_threads}). Other jobs share "
            "the cores: wall times are inflated and noisy, CPU times less so (but caches and memory "
            "bandwidth are shared too). Rerun on a quiet machine for figures to quote.")


# ---- timing -----------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> Timing:
    """One warm-up run of ``fn()`` (lazy initialisation, allocator, cuDNN autotuning), then ``repeat``
    timed runs; the same for every side of every comparison."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return Timing(tuple(walls), tuple(cpus))


def build_model(arch: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None).eval().to(device)


def frozen(model: nn.Module) -> nn.Module:
    """A copy with every parameter's ``requires_grad`` off (the equal-settings rows, both sides)."""
    return copy.deepcopy(model).requires_grad_(False)


class Generic(nn.Module):
    """Wraps a head so that it is not a plain Sequential: our methods take their generic path (no
    first-Linear shortcut), evaluating the whole head on every changed activation set."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, a: Tensor) -> Tensor:
        return self.head(a)


def first_maps(cls: type[cc.BaseCAM], m: int | None) -> type[cc.BaseCAM]:
    """``cls`` scoring only the first ``m`` maps (the others get alpha 0): per-map cost times ``m``."""
    if m is None:
        return cls

    class FirstMaps(cls):  # type: ignore[misc, valid-type]
        def coefficients(self, ctx: CAMContext) -> Tensor:
            k = ctx.activations.shape[1]
            alpha = super().coefficients(dataclasses.replace(ctx, activations=ctx.activations[:, :m]))
            return torch.cat([alpha, alpha.new_zeros(alpha.shape[0], k - alpha.shape[1])], dim=1)

    return FirstMaps


def method_settings(cls: type[cc.BaseCAM], args: argparse.Namespace) -> dict[str, object]:
    """Small settings for the stochastic methods, whichever of them the class takes."""
    small = {"n_orderings": args.shap_orderings, "n_samples": args.samples, "seed": args.seed}
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in small.items() if k in params}


# ---- our methods --------------------------------------------------------------------------------------
def bench_ours(args, arch, model, x, device) -> tuple[list[dict], dict[str, Timing]]:
    """Per-image time of each of our methods: table rows and {name: Timing per image}."""
    layer = LAYERS[arch]
    names = args.methods.split(",") if args.methods else list(cc.METHODS)
    unknown = [n for n in names if n not in cc.METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; available: {', '.join(cc.METHODS)}")
    names = ["Grad-CAM", *[n for n in names if n != "Grad-CAM"]]
    per_image: dict[str, Timing] = {}
    rows = []
    for name in names:
        cls = cc.METHODS[name]
        slow = name in PER_MAP_FULL_MODEL
        if slow:
            cls = first_maps(cls, args.maps)
        settings = method_settings(cc.METHODS[name], args)
        xs = x[: args.baseline_images] if slow else x
        try:
            method = cls(model, layer, **settings)
            t = timed(lambda m=method, xs=xs: m(xs), device, args.repeat)
        except ValueError as err:  # e.g. CAM needs a global-average-pool + linear head
            reason = str(err).split(";")[0].split(". ")[0]
            rows.append({"method": name, "images": 0, "t": None, "note": f"not applicable: {reason}"})
            print(f"  {arch:9s} {name:14s} not applicable", flush=True)
            continue
        per_image[name] = t.per(len(xs))
        note = ", ".join(f"{k} = {v}" for k, v in settings.items() if k != "seed")
        if slow and args.maps is not None:
            note = ", ".join(filter(None, [note, f"first {args.maps} maps"]))
        rows.append({"method": name, "images": len(xs), "t": per_image[name], "note": note})
        print(f"  {arch:9s} {name:14s} {per_image[name]} s/image", flush=True)
    for row in rows:
        row["ratio"] = ratio(row["t"], per_image["Grad-CAM"]) if row["t"] is not None else "-"
    return rows, per_image


# ---- comparisons ----------------------------------------------------------------------------------------
class Row(NamedTuple):
    comparison: str
    setting: str  # "equal" | "best" | another label
    how: str  # what each side ran
    ours: Timing  # per image (per ordering per image for SHAP-CAM)
    theirs: Timing


def _their_cam(cls, model: nn.Module, layer: str, **kw):
    cam = cls(model, [dict(model.named_modules())[layer]], **kw)
    return cam


def compare_grad_cam(args, arch, model, x, device, target, ours_best: Timing) -> list[Row]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, n = LAYERS[arch], len(x)
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    ice = frozen(model)
    ours_frozen = cc.GradCAM(ice, layer)
    ours_eq = timed(lambda: ours_frozen(x, target), device, args.repeat).per(n)
    times = {}
    for label, twin in (("frozen", frozen(model)), ("as usually called", copy.deepcopy(model))):
        # with every parameter frozen the layer's output needs a grad path: compute_input_gradient=True
        cam = _their_cam(GradCAM, twin, layer)
        cam.compute_input_gradient = label == "frozen"
        times[label] = timed(lambda c=cam: c(x, targets=targets), device, args.repeat).per(n)
        cam.activations_and_grads.release()
    how_eq = (f"both: {n} images per call, frozen parameters (pytorch-grad-cam then needs "
              "compute_input_gradient=True: it back-propagates to the input, without weight gradients)")
    return [
        Row("Grad-CAM", "equal", how_eq, ours_eq, times["frozen"]),
        Row("Grad-CAM", "best", "ours: the methods table's run; pytorch-grad-cam: the equal row's run "
            "(frozen parameters, its fastest)",
            ours_best, times["frozen"]),
        Row("Grad-CAM", "pytorch-grad-cam as usually called",
            "ours: the methods table's run; pytorch-grad-cam: parameters require grad (it back-propagates "
            "into every weight)", ours_best, times["as usually called"]),
    ]


def compare_ablation(args, arch, model, x, device, target) -> list[Row]:
    import numpy as np
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class FirstMapsAblationLayer(AblationLayer):
        """pytorch-grad-cam's ablation layer, ablating only the first ``m`` maps (--maps)."""

        def __init__(self, m: int | None) -> None:
            super().__init__()
            self.m = m

        def activations_to_be_ablated(self, activations, ratio_channels_to_ablate=1.0):
            k = activations.shape[0]
            self.indices = np.int32(range(min(self.m or k, k)))
            return self.indices

    layer, n = LAYERS[arch], args.baseline_images
    xs, ts = x[:n], target[:n]
    targets = [ClassifierOutputTarget(int(t)) for t in ts]
    ice = frozen(model)
    body, head = cc.split_model(ice, layer)
    # ours ablates all K maps (the head needs every map, so it cannot be cut to --maps like Score-CAM)
    generic = cc.AblationCAM(ice, layer, split=(body, Generic(head)), batch_size=EQUAL_BATCH["Ablation-CAM"])
    ours_eq = timed(lambda: generic(xs, ts), device, args.repeat).per(n)
    best = cc.AblationCAM(model, layer)
    ours_best = timed(lambda: best(xs, ts), device, args.repeat).per(n)
    twin = frozen(model)
    cam = _their_cam(AblationCAM, twin, layer, ablation_layer=FirstMapsAblationLayer(args.maps),
                     batch_size=EQUAL_BATCH["Ablation-CAM"])
    theirs = timed(lambda: cam(xs, targets=targets), device, args.repeat).per(n)
    cam.activations_and_grads.release()
    maps = "all maps" if args.maps is None else f"the first {args.maps} maps"
    bound = "" if args.maps is None else "; ours on all maps, so the speed-up is a lower bound"
    return [
        Row("Ablation-CAM", "equal",
            f"both: {n} image(s), batch {EQUAL_BATCH['Ablation-CAM']}, frozen parameters; ours: the whole "
            f"head per ablated map (no first-Linear shortcut); pytorch-grad-cam: the whole model per map, on "
            f"{maps}{bound}",
            ours_eq, theirs),
        Row("Ablation-CAM", "best",
            f"ours: defaults (batch 64, first-Linear shortcut); pytorch-grad-cam: its default batch "
            f"{THEIR_BEST_BATCH['Ablation-CAM']} (the equal row's run), frozen parameters, on {maps}{bound}",
            ours_best, theirs),
    ]


def compare_score(args, arch, model, x, device, target) -> list[Row]:
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class FirstMapsScoreCAM(ScoreCAM):
        """pytorch-grad-cam's Score-CAM scoring only the first ``m`` maps (--maps); the others get 0."""

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            k = activations.shape[1]
            w = super().get_cam_weights(input_tensor, target_layer, targets, activations[:, : args.maps],
                                        grads)
            return np.concatenate([w, np.zeros((w.shape[0], k - w.shape[1]), dtype=w.dtype)], axis=1)

    import numpy as np

    layer, n = LAYERS[arch], args.baseline_images
    xs, ts = x[:n], target[:n]
    targets = [ClassifierOutputTarget(int(t)) for t in ts]
    ours_cls = first_maps(cc.ScoreCAM, args.maps)
    ice = frozen(model)
    ours_frozen = ours_cls(ice, layer, batch_size=EQUAL_BATCH["Score-CAM"])
    ours_eq = timed(lambda: ours_frozen(xs, ts), device, args.repeat).per(n)
    ours_default = ours_cls(model, layer)  # timed here, beside theirs, not reused from the methods table
    ours_best = timed(lambda: ours_default(xs, ts), device, args.repeat).per(n)
    theirs = {}
    for label, batch in (("equal", EQUAL_BATCH["Score-CAM"]), ("best", THEIR_BEST_BATCH["Score-CAM"])):
        twin = frozen(model)
        cam = _their_cam(FirstMapsScoreCAM if args.maps is not None else ScoreCAM, twin, layer)
        cam.batch_size = batch
        theirs[label] = timed(lambda c=cam: c(xs, targets=targets), device, args.repeat).per(n)
        cam.activations_and_grads.release()
    maps = "all maps" if args.maps is None else f"the first {args.maps} maps"
    return [
        Row("Score-CAM", "equal", f"both: {n} image(s), batch {EQUAL_BATCH['Score-CAM']}, frozen parameters, "
            f"{maps}", ours_eq, theirs["equal"]),
        Row("Score-CAM", "best", f"ours: defaults (batch 64, channels-last); pytorch-grad-cam: its "
            f"default batch {THEIR_BEST_BATCH['Score-CAM']}, frozen parameters; {maps}", ours_best,
            theirs["best"]),
    ]


def compare_shap(args, arch, model, x, device) -> list[Row]:
    """Seconds per ordering per image on the head: ours (cc.shapley.permutation) and Captum's sampler."""
    from captum.attr import ShapleyValueSampling

    ice = frozen(model)
    body, head = cc.split_model(ice, LAYERS[arch])
    with torch.no_grad():
        a = body(x)  # (N, K, h, w)
        target = head(a).argmax(1)
    k = a.shape[1]
    n = args.baseline_images
    p_captum = args.captum_orderings or (5 if device.type == "cuda" else 1)
    mask = torch.arange(k, device=device).view(1, k, 1, 1).repeat(1, 1, *a.shape[2:])  # one group per map

    def captum(ppe: int) -> Callable[[], object]:
        def run() -> None:
            with torch.no_grad():
                ShapleyValueSampling(head).attribute(a[:n], target=target[:n], feature_mask=mask,
                                                     n_samples=p_captum, perturbations_per_eval=ppe)
        return run

    eq = EQUAL_BATCH["SHAP-CAM"]
    ours_eq = timed(lambda: cc.shapley.permutation(head, a[:n], target[:n], p_captum, seed=args.seed,
                                                   batch_size=eq * n, fast=False), device, args.repeat)
    theirs_eq = timed(captum(eq), device, args.repeat)
    p = args.shap_orderings
    ours_best = timed(lambda: cc.shapley.permutation(head, a, target, p, seed=args.seed), device, args.repeat)
    same = CAPTUM_BEST_PPE[arch] == eq  # its best is the equal row's batch: that run is reused
    theirs_best = theirs_eq if same else timed(captum(CAPTUM_BEST_PPE[arch]), device, args.repeat)
    fast = cc.shapley.first_linear_terms(head, a[:1], target[:1]) is not None
    return [
        Row("SHAP-CAM per ordering", "equal",
            f"both: {n} image(s), {p_captum} ordering(s), {eq} coalitions per forward, generic (the whole "
            "head per coalition), frozen parameters", ours_eq.per(p_captum * n), theirs_eq.per(p_captum * n)),
        Row("SHAP-CAM per ordering", "best",
            f"ours: defaults ({len(x)} images, {p} orderings, 1,024 rows per forward"
            f"{', first-Linear shortcut' if fast else ''}); Captum: {n} image(s), {p_captum} ordering(s), "
            f"perturbations_per_eval {CAPTUM_BEST_PPE[arch]}{' (the equal row run)' if same else ''}",
            ours_best.per(p * len(x)), theirs_best.per(p_captum * n)),
    ]


# ---- the report ---------------------------------------------------------------------------------------
def _loadavg() -> tuple[float, float, float]:
    return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def comparison_block(cmp: list[Row], failed: list[str]) -> list[str]:
    """The markdown table of a model's comparisons (and a line per failed one)."""
    lines = ["Against pytorch-grad-cam (Grad-CAM, Ablation-CAM, Score-CAM) and Captum (SHAP-CAM): seconds "
             "per image (SHAP-CAM: per ordering per image), median [min-max], wall (CPU).", "",
             "| comparison | settings | ours | theirs | speed-up: theirs / ours, wall (CPU) | what ran |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.comparison} | {r.setting} | {r.ours} | {r.theirs} | {ratio(r.theirs, r.ours)} | "
              f"{r.how} |" for r in cmp]
    return [*lines, *failed, ""]


def target_checks(arch: str, cmp: list[Row]) -> list[str]:
    """One line per comparison row: against its target, or reported as it is (equal settings)."""
    checks = []
    for r in cmp:
        other = "Captum" if r.comparison.startswith("SHAP") else "pytorch-grad-cam"
        key = f"{r.comparison}, {r.setting} settings: {other} / ours"
        shown = ratio(r.theirs, r.ours)
        if key in TARGETS:
            checks.append(_check(arch, key, shown, r.theirs.cpu / r.ours.cpu))
        elif r.setting == "equal":
            checks.append(f"{arch}: {key} = {shown} (reported as it is)")
    return checks


def run(args: argparse.Namespace) -> str:
    """Run the benchmark; the markdown is (re)written to ``args.out`` after every section, so a run
    stopped early leaves what it measured, marked as partial."""
    load_before = _loadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = cc.resolve_device(args.device)
    if args.baseline_images is None:
        args.baseline_images = args.batch if device.type == "cuda" else 1
    args.baseline_images = max(1, min(args.baseline_images, args.batch))
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    sections: list[str] = []
    checks: list[str] = []

    def flush(extra: list[str], status: str | None) -> str:
        text = _render(args, device, load_before, sections + extra, checks, status)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(out)
        return text

    for arch in args.models.split(","):
        if arch not in LAYERS:
            raise SystemExit(f"unknown model {arch!r}; choose from {', '.join(LAYERS)}")
        print(f"{arch} at {LAYERS[arch]} ...", flush=True)
        model = build_model(arch, args.seed, device)
        rows, ours = bench_ours(args, arch, model, x, device)
        sections += [f"## {arch} (target layer `{LAYERS[arch]}`)", "",
                     "Every registered method, seconds per image (median [min-max] of the repeats, wall and "
                     "in brackets CPU), and its cost relative to our Grad-CAM in the same run.", "",
                     "| method | images | s / image: wall (CPU) | cost / Grad-CAM: wall (CPU) | settings |",
                     "|---|---|---|---|---|"]
        sections += [f"| {r['method']} | {r['images']} | {r['t'] if r['t'] is not None else '-'} | "
                     f"{r['ratio']} | {r['note']} |" for r in rows]
        sections.append("")
        if "LIFT-CAM" in ours:
            shown = ratio(ours["LIFT-CAM"], ours["Grad-CAM"])
            value = ours["LIFT-CAM"].cpu / ours["Grad-CAM"].cpu
            checks.append(_check(arch, "LIFT-CAM / Grad-CAM", shown, value))
        flush([], f"partial: the run was still going ({arch}: methods table done)")
        if args.no_baselines:
            continue
        with torch.no_grad():
            target = model(x).argmax(1)
        chosen = set(args.methods.split(",")) if args.methods else set(cc.METHODS)
        cmp: list[Row] = []
        failed: list[str] = []
        for name in ("Score-CAM", "Grad-CAM", "Ablation-CAM", "SHAP-CAM"):
            if name not in chosen and name != "Grad-CAM":
                continue
            try:  # one failing comparison is reported, the others still run
                if name == "Grad-CAM":
                    new = compare_grad_cam(args, arch, model, x, device, target, ours["Grad-CAM"])
                elif name == "Ablation-CAM":
                    new = compare_ablation(args, arch, model, x, device, target)
                elif name == "Score-CAM":
                    new = compare_score(args, arch, model, x, device, target)
                else:
                    new = compare_shap(args, arch, model, x, device)
            except Exception as err:  # noqa: BLE001
                failed.append(f"- {name}: the comparison failed: {type(err).__name__}: {err}")
                print(failed[-1], flush=True)
                new = []
            cmp += new
            for row in new:
                print(f"  {arch:9s} {row.comparison} {row.setting}: ours {row.ours}, theirs {row.theirs}",
                      flush=True)
            flush(comparison_block(cmp, failed), f"partial: the run was still going ({arch}: {name} done)")
        sections += comparison_block(cmp, failed)
        checks += target_checks(arch, cmp)
        del model
    return flush([], None)


def _render(args: argparse.Namespace, device: torch.device, load_before: Sequence[float], sections: list[str],
            checks: list[str], status: str | None) -> str:
    load_now = _loadavg()
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({cores} cores, {torch.get_num_threads()} torch threads)")
    maps = ("all maps" if args.maps is None else
            f"only the first {args.maps} maps of K (512 on VGG16, 2,048 on ResNet50; `--maps {args.maps}`, "
            "to fit a busy machine: a full map set costs about K / M times as much, and the ratios of the "
            "per-map methods do not depend on M)")
    header = [
        "# cam_core speed benchmark", "",
        f"`{' '.join(['bench/run.py', *sys.argv[1:]])}` on {dev_name}, torch {torch.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
        f"{args.size} px, batch {args.batch}, random torchvision weights (seed {args.seed}). Every timing, "
        f"on every side: one warm-up run, then {args.repeat} timed run(s), reported as median [min-max]. "
        "Times are wall seconds, in brackets process CPU seconds (all threads; the steadier of the two on "
        "a shared CPU machine; on CUDA only the host's share). Per-map full-model runs (our Score-CAM, "
        f"pytorch-grad-cam's Score-CAM and Ablation-CAM) on {args.baseline_images} image(s) and {maps}.",
        "",
        f"Load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{', '.join(f'{v:.2f}' for v in load_now)} {'now' if status else 'after'}.",
        "",
    ]
    warning = load_warning(load_before, load_now, cores, threads)
    if warning:
        header += [warning, ""]
    if status:
        header += [f"**This file is {status}.**", ""]
    footer = ["## Against the project's targets (CPU-time ratios decide; wall in the first figure)", ""]
    footer += [f"- {c}" for c in checks] + [""]
    return "\n".join(header + sections + footer)


def _check(arch: str, key: str, shown: str, value: float) -> str:
    target = TARGETS[key]
    verdict = "met" if meets(value, target) else "NOT met"
    return f"{arch}: {key} = {shown} (target {target[0]} {target[1]:g}: {verdict})"


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
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
