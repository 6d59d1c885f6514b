"""Training the embedded benchmark's CNNs, deterministically, and the ``train`` command.

    python -m cam_core train --all --jobs 2                          # every default model (label recipe, all seeds)
    python -m cam_core train --benchmark shapes-single --arch vgg    # one of them (all its seeds)
    python -m cam_core train --benchmark shapes-single --arch vgg --model-seed 1   # one seed
    python -m cam_core train --all --recipe evidence                 # benchmark v4's models (the ablation)
    python -m cam_core train --all --check                           # retrain in a temp dir, compare hashes

Two recipes (``TrainConfig.target``, recorded as ``config["target"]``): ``"label"`` (the default
models) trains on the labels alone, with label smoothing, rotations and jitter: no box enters the
target or the augmentation, so nothing the box-based metrics score (AD/IC/ADD, pointing) is trained
in (issue 20). ``"evidence"`` is benchmark v4's recipe, kept as an ablation: a share of each batch
masked, with a target that follows the mean mask over the object's ground-truth box
(:func:`augment.evidence_targets`).

Seeds: each VGG-style model is trained from scratch with model seeds 0, 1, 2 (:data:`MODEL_SEEDS`):
different initialisation, data order, augmentation and dropout; the ResNet-style models (Table 2)
with seed 0.

Determinism: the model's initialisation, the shuffling, the augmentation and dropout all draw
from generators seeded by ``seed``; training runs with ``torch.use_deterministic_algorithms``
and a fixed thread count (both restored afterwards). The same torch build on the same kind of
CPU then gives bit-for-bit the same state dict; its SHA-256 is in ``data/models/manifest.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam_core.benchmarks import augment, card, checkpoints, generator, nets, scores, store


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1  # calibration: no target of 1.0, so the softmax does not saturate
    mask_share: float = 0.5  # share of each batch multiplied by a mask toward black (augment.random_masks)
    mask_ramp: float = 0.3  # the share grows linearly from 0 over this fraction of the steps (curriculum)
    loss: str = "auto"  # "auto": CE (single-label) or BCE (multi-label); "bce": BCE on one-hot labels
    init: str | None = None  # "<variant>-<arch>": start from that trained model (same seed and target, same data_dir)
    target: str = "label"  # "label": labels only (no box anywhere); "evidence": v4's box-evidence target


# ---- the schedules ------------------------------------------------------------------------------------
# The label recipe (the default models; issue 20): labels, label smoothing, rotations and jitter, no mask
# (masked images are out of distribution, as for the paper's torchvision models). Each seed's shapes-multi
# model from a random start (2-3 labelled objects per image: the most labels per step; a single-label
# model from a random start stays at chance level for hundreds of steps), its shapes-single and
# shapes-clutter models fine-tuned from it (the same 12 classes): no weight ever saw a box. Sized to the
# CPU budget of the session that trained them (9 VGG-style models, 2 jobs of 1 thread on a shared 2-core
# machine; the 3 ResNet-style ones took 8 min in all on a quiet one): times in data/models/CARD.md.
_LABEL = TrainConfig(epochs=18, batch_size=64, lr=3e-3, mask_share=0.0, mask_ramp=0.0)
_LABEL_FINE_TUNE = TrainConfig(epochs=6, batch_size=64, lr=1.5e-3, mask_share=0.0, mask_ramp=0.0)
_LABEL_SINGLE = replace(_LABEL_FINE_TUNE, epochs=3)  # one object per image: the easy one


def _family(archs: tuple[str, ...], from_scratch: TrainConfig, single: TrainConfig,
            clutter: TrainConfig) -> dict[tuple[str, str], TrainConfig]:
    """Per architecture: its shapes-multi model from ``from_scratch``, its shapes-single and shapes-clutter
    models fine-tuned from that one (``single``, ``clutter`` with ``init`` set)."""
    out: dict[tuple[str, str], TrainConfig] = {}
    for arch in archs:
        out[("shapes-multi", arch)] = from_scratch
        out[("shapes-single", arch)] = replace(single, init=f"shapes-multi-{arch}")
        out[("shapes-clutter", arch)] = replace(clutter, init=f"shapes-multi-{arch}")
    return out


# the VGG-style models (Tables 3-5, three seeds) and the ResNet-style ones (Table 2's linear head, one seed)
CONFIGS: dict[tuple[str, str], TrainConfig] = _family(("vgg", "resnet"), _LABEL, _LABEL_SINGLE,
                                                      _LABEL_FINE_TUNE)
# The evidence recipe: benchmark v4's six models, kept (bit for bit, renamed `<variant>-<arch>-evidence.pt`)
# as the ablation of chapter 4 (and the ResNet stem the ViT starts from). Each architecture trained from a
# random start on shapes-multi, the other two fine-tuned from it. Measured (1 thread each, `--jobs 2`, quiet
# machine): 21 + 13 min from scratch, 3-6 min per fine-tune, 31 min in all.
_FINE_TUNE = TrainConfig(epochs=10, batch_size=64, lr=1.5e-3, mask_share=0.4, mask_ramp=0.0, target="evidence")
_FROM_SCRATCH = TrainConfig(epochs=36, batch_size=64, lr=3e-3, mask_share=0.4, target="evidence")
EVIDENCE_CONFIGS: dict[tuple[str, str], TrainConfig] = {
    **_family(("vgg", "resnet"), _FROM_SCRATCH, _FINE_TUNE, _FINE_TUNE),
    # issue 24's small ViT (nets.ShapesViT), from scratch, single-label only: `train --benchmark shapes-single
    # --arch vit`, in `train --all` with the evidence recipe: its masks are v4's, so it is no label-recipe model)
    ("shapes-single", "vit"): TrainConfig(epochs=3, batch_size=64, lr=2e-3, mask_share=0.4, target="evidence",
                                          init="shapes-single-resnet"),
}
# the model seeds trained per architecture and recipe (Tables 3-5 use the VGG-style models)
MODEL_SEEDS: dict[tuple[str, str], tuple[int, ...]] = {("vgg", "label"): (0, 1, 2)}  # others: (0,)


def configs(recipe: str = "label") -> dict[tuple[str, str], TrainConfig]:
    """The schedules of a recipe, per (variant, arch)."""
    return {"label": CONFIGS, "evidence": EVIDENCE_CONFIGS}[checkpoints.check_target(recipe)]


def default_recipe(variant: str, arch: str) -> str:
    """The recipe of the model ``cc.benchmarks.load(variant, arch=arch)`` loads: ``"label"`` where that
    recipe has a schedule (every CNN), else ``"evidence"`` (issue 24's ViT, see :data:`EVIDENCE_CONFIGS`)."""
    return "label" if (variant, arch) in CONFIGS else "evidence"


def planned(recipe: str | None = "label", variants: list[str] | None = None, archs: list[str] | None = None,
            seeds: list[int] | None = None) -> list[tuple[str, str, int, str]]:
    """``(variant, arch, model_seed, recipe)`` of every model ``recipe`` trains (None: every recipe),
    restricted to the given variants / archs / seeds, the ones others start from (``TrainConfig.init``)
    first."""
    todo: list[tuple[str, str, int, str]] = []
    for r in (checkpoints.TARGETS if recipe is None else (checkpoints.check_target(recipe),)):
        for (v, a), cfg in configs(r).items():
            if (variants is not None and v not in variants) or (archs is not None and a not in archs):
                continue
            ks = MODEL_SEEDS.get((a, r), (0,)) if seeds is None else seeds  # an explicit seed is trained
            todo += [(v, a, k, r) for k in ks]
    return sorted(todo, key=lambda t: (configs(t[3])[t[:2]].init is not None, checkpoints.TARGETS.index(t[3]),
                                       t[2], t[1], t[0]))


def loss_fn(logits: Tensor, y: Tensor, multilabel: bool, smoothing: float, kind: str = "auto") -> Tensor:
    """Cross-entropy with label smoothing (single-label), or binary cross-entropy against labels
    smoothed to ``smoothing / 2`` and ``1 - smoothing / 2`` (multi-label, or ``kind="bce"``: one
    independent sigmoid per class of a single-label benchmark). ``y`` is the class (B,) long, or soft
    targets: (B, C) class probabilities (single-label) or per-class targets in [0, 1] (multi-label,
    :func:`augment.evidence_targets`)."""
    if kind not in ("auto", "bce"):
        raise ValueError(f"loss must be 'auto' or 'bce', got {kind!r}")
    if not multilabel and kind == "bce":
        y = F.one_hot(y, logits.shape[1]).to(logits.dtype) if y.dim() == 1 else y
        multilabel = True
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y * (1 - smoothing) + smoothing / 2)
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


# ---- deterministic training ----------------------------------------------------------------------
@contextlib.contextmanager
def deterministic(seed: int, threads: int, device: torch.device) -> Iterator[None]:
    """Seeded RNGs (forked: the caller's RNG state is restored), deterministic algorithms, and a
    fixed CPU thread count, all restored on exit."""
    if device.type == "cuda":  # cuBLAS needs this to be deterministic; set before the first call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        # CUDA has no deterministic kernel for a few backward ops used here (adaptive average
        # pooling): warn there instead of failing; the CPU path is fully deterministic.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det)
            torch.set_num_threads(old_threads)


def train(variant: str, arch: str, seed: int = 0, device: torch.device | str = "cpu", threads: int = 1,
          config: TrainConfig | None = None, data_dir: str | os.PathLike[str] | None = None,
          n_train: int | None = None, max_steps: int | None = None, progress: bool = True,
          evaluate: bool = True, recipe: str = "label") -> tuple[nn.Module, dict[str, Any]]:
    """Train ``arch`` on ``variant``'s train split; return the model (eval mode, CPU) and its record
    (seed, held-out score, state hash, timings). ``seed`` is the model seed (initialisation, data
    order, augmentation, dropout); ``recipe`` picks the schedule of :func:`configs` unless ``config``
    is given. ``max_steps``/``n_train`` shorten it (tests)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    spec = generator.spec(variant)
    config = config or configs(recipe)[(variant, arch)]
    checkpoints.check_target(config.target)
    train_data = store.dataset(variant, "train", seed=0, n=n_train, data_dir=data_dir)
    n = len(train_data)
    steps_per_epoch = n // config.batch_size
    total = steps_per_epoch * config.epochs if max_steps is None else max_steps
    start = time.perf_counter()
    with deterministic(seed, threads, device):
        model = nets.build(arch, len(generator.CLASS_NAMES), generator.IMAGE_SIZE)
        init_sha = None
        if config.init:  # fine-tune a trained model (read before anything draws from the seeded RNGs)
            init_variant, init_arch = config.init.rsplit("-", 1)
            init_path = checkpoints.checkpoint_path(store.resolve_data_dir(data_dir), init_variant, init_arch,
                                                    seed, config.target)
            if not init_path.exists():
                raise ValueError(f"{variant}/{arch} starts from {init_path.stem}, which is not trained yet "
                                 f"({init_path}); train it first (`"
                                 f"{checkpoints.train_command(init_variant, init_arch, seed, config.target)}`), "
                                 "or use `train --all`")
            init_ckpt = checkpoints.read_checkpoint(init_path)
            getattr(model, "load_init", model.load_state_dict)(init_ckpt["state_dict"])  # ViT: its stem
            init_sha = init_ckpt["record"]["sha256"]
        model = model.to(device).to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(total, 1),
                                                    pct_start=0.15)
        model.train()
        step = 0
        bar = tqdm(total=total, desc=f"train {variant}/{arch}", disable=not progress, leave=False)
        while step < total:
            perm = torch.randperm(n, generator=g)
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                idx = perm[b * config.batch_size: (b + 1) * config.batch_size]
                x = train_data.x[idx].float().div_(255)  # (B, 3, S, S) pixels
                share = config.mask_share * min(1.0, step / max(config.mask_ramp * total, 1))
                if config.target == "label":  # labels only: no box enters the augmentation or the target
                    x = augment.label_augment(x, g, share)
                    y = train_data.labels[idx]
                    y = (y.float() if spec.multilabel else y).to(device)
                else:  # "evidence" (v4, the ablation): the target follows the mask over the true boxes
                    x, evidence = augment.augment(x, g, share, train_data.boxes[idx])
                    y = augment.evidence_targets(train_data.labels[idx], train_data.box_labels[idx], evidence,
                                                 len(generator.CLASS_NAMES), spec.multilabel).to(device)
                x = generator.normalize(x).to(device)
                x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
                logits = model(x)
                loss = loss_fn(logits, y, spec.multilabel, config.label_smoothing, config.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
    train_seconds = time.perf_counter() - start
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    record: dict[str, Any] = {
        "variant": variant, "arch": arch, "seed": seed, "model_seed": seed, "target": config.target,
        "data_seed": 0, "train_images": n, "steps": total,
        "config": asdict(config), "device": str(device), "threads": threads,
        "torch": str(torch.__version__), "cpu": platform.machine(), "processor": platform.processor() or "",
        "train_seconds": round(train_seconds, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "sha256": nets.state_dict_sha256(model),
        "generator_version": generator.GENERATOR_VERSION,
        "generator_fingerprint": generator.fingerprint(variant),
        "checkpoint_version": checkpoints.CHECKPOINT_VERSION,
        "init_sha256": init_sha,
        "metric": "mAP" if spec.multilabel else "top-1",
    }
    if evaluate:
        test = store.dataset(variant, "test", seed=0, data_dir=data_dir)
        rep = scores.report(scores.logits_of(model, test), test.labels, spec.multilabel)
        keys = ("score", "share_above_0.99", "ece", "mean_top1_softmax")
        record.update({k: round(rep[k], 4) for k in keys})
        record["test_images"] = len(test)
    return model, record


# ---- files -----------------------------------------------------------------------------------------
def save(model: nn.Module, record: dict[str, Any], data_dir: Path, figure: bool = True) -> Path:
    """Write the checkpoint, update ``manifest.json`` and regenerate ``CARD.md`` (with its example
    figure, drawn when missing, if ``figure``)."""
    path = checkpoints.save_checkpoint(model, record, data_dir)
    card.write_card(data_dir, figure=figure)
    return path


def train_and_save(variant: str, arch: str, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                   device: torch.device | str = "cpu", threads: int = 1,
                   progress: bool = True, recipe: str = "label") -> dict[str, Any]:
    """Train ``variant``/``arch`` (model seed ``seed``, ``recipe``) and write its checkpoint, the manifest
    entry and the card."""
    root = store.resolve_data_dir(data_dir)
    model, record = train(variant, arch, seed=seed, device=device, threads=threads, data_dir=root,
                          progress=progress, recipe=recipe)
    save(model, record, root)
    return record


def check(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu",
          progress: bool = True, seed: int = 0, recipe: str = "label") -> tuple[bool, str]:
    """Retrain ``variant``/``arch`` (model seed ``seed``, ``recipe``) into a temp dir with the recorded
    threads, and compare the state hash with the manifest's. Returns ``(same, explanation)``."""
    key = checkpoints.model_key(variant, arch, seed, recipe)
    rec = checkpoints.read_manifest(data_dir).get("models", {}).get(key)
    if rec is None:
        return False, f"{key}: not in the manifest; train it first"
    tmp = Path(tempfile.mkdtemp(prefix="cam_core_check_"))
    try:
        gen = data_dir / "generated"
        if gen.is_dir():  # reuse the cached images (they are deterministic too)
            (tmp / "generated").symlink_to(gen.resolve())
        init = configs(recipe)[(variant, arch)].init
        if init:  # the model it starts from, as committed
            (tmp / "models").mkdir()
            src = checkpoints.checkpoint_path(data_dir, *init.rsplit("-", 1), rec.get("seed", seed), recipe)
            if src.exists():  # (if not, train says which model to train first)
                shutil.copy(src, tmp / "models" / src.name)
        _, new = train(variant, arch, seed=rec.get("seed", seed), device=device, threads=rec["threads"],
                       data_dir=tmp, progress=progress, evaluate=False, recipe=recipe)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if new["sha256"] == rec["sha256"]:
        return True, f"{key}: bit-for-bit identical (sha256 {rec['sha256'][:16]})"
    fields = ("torch", "device", "cpu", "processor", "generator_version", "generator_fingerprint",
              "checkpoint_version", "config")
    why = [f"{k}: recorded {rec.get(k)!r}, here {new.get(k)!r}" for k in fields if rec.get(k) != new.get(k)]
    reason = "; ".join(why) if why else ("same torch, device and settings, so the difference comes from the "
                                         "CPU's kernels (instruction set, oneDNN code path) or changed code")
    return False, (f"{key}: differs (recorded {rec['sha256'][:16]}, now {new['sha256'][:16]}). "
                   f"Likely why: {reason}")


# ---- command line --------------------------------------------------------------------------------
def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train (or --check) the embedded benchmark's CNNs",
                              description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every variant x architecture x model seed")
    which.add_argument("--benchmark", choices=list(generator.VARIANTS), help="one variant")
    p.add_argument("--arch", choices=[*nets.ARCHS, *nets.TRANSFORMER_ARCHS], default=None,
                   help="one architecture (default: vgg and resnet; vit: shapes-single only, evidence recipe)")
    p.add_argument("--recipe", choices=list(checkpoints.TARGETS), default=None,
                   help="label (the models the book uses) or evidence (benchmark v4's, the ablation); default: "
                        "every recipe with --all, the model's default recipe with --benchmark")
    p.add_argument("--device", default="cpu",
                   help="cpu (default; what the committed hashes are for), cuda, auto")
    p.add_argument("--model-seed", "--seed", dest="seed", type=int, default=None,
                   help="one model seed (default: every seed of MODEL_SEEDS: 0, 1, 2 for vgg, 0 for resnet)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training (recorded; default 1)")
    p.add_argument("--data-dir", default=None, help="where models/ and generated/ live (default: repo data/)")
    p.add_argument("--check", action="store_true", help="retrain in a temp dir and compare with the manifest")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many models at once, in separate processes (each with --threads threads; "
                        "the result of each is the same as alone); default 1")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cam_core.runtime import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"train: --device: {err}") from None
    for option, value in (("--jobs", args.jobs), ("--threads", args.threads)):
        if value < 1:
            raise SystemExit(f"train: {option} must be a positive integer, got {value}")
    try:
        root = store.resolve_data_dir(args.data_dir)
    except ValueError as err:
        raise SystemExit(f"train: --data-dir: {err}") from None
    recipe = getattr(args, "recipe", None)
    archs = [args.arch] if args.arch else None
    seeds = None if args.seed is None else [args.seed]
    if args.all:
        todo = planned(recipe, None, archs, seeds)
    elif recipe is None:  # one variant: each architecture's default recipe
        todo = [t for a in (archs or list(nets.ARCHS))
                for t in planned(default_recipe(args.benchmark, a), [args.benchmark], [a], seeds)]
    else:
        todo = planned(recipe, [args.benchmark], archs, seeds)
    if not todo:
        raise SystemExit(f"train: the {recipe} recipe trains none of these models; its models: "
                         + ", ".join(f"{v}-{a}" for v, a in configs(recipe or "label")))
    failed = 0
    if args.jobs > 1 and not args.check:
        return _run_parallel(todo, root, args, device)
    for v, a, k, r in todo:
        if args.check:
            same, msg = check(v, a, root, device, seed=k, recipe=r)
            failed += not same
            print(msg, flush=True)
            continue
        rec = train_and_save(v, a, data_dir=root, seed=k, device=device, threads=args.threads, recipe=r)
        _report(rec, root)
    return 1 if failed else 0


def _report(rec: dict[str, Any], root: Path) -> None:
    print(f"{checkpoints.record_key(rec)}: held-out {rec['metric']} {rec['score']:.4f} "
          f"(top-1 softmax > 0.99: {rec['share_above_0.99']:.3f}, ECE {rec['ece']:.3f}) in "
          f"{rec['train_seconds']:.0f} s -> {root / 'models' / (checkpoints.record_key(rec) + '.pt')}",
          flush=True)


def _train_quietly(variant: str, arch: str, root: Path, seed: int, device: str,
                   threads: int, recipe: str = "label") -> dict[str, Any]:
    """One ``--jobs`` worker: train and write the checkpoint and manifest entry (the card is the parent's)."""
    model, record = train(variant, arch, seed=seed, device=device, threads=threads, data_dir=root,
                          progress=False, recipe=recipe)
    checkpoints.save_checkpoint(model, record, root)
    return record


def _run_parallel(todo: list[tuple[str, str, int, str]], root: Path, args: argparse.Namespace,
                  device: torch.device) -> int:
    """``train --jobs N``: up to N trainings at once in spawned processes; a model that starts from
    another (``TrainConfig.init``, same seed and recipe) waits for it. The card is written once, at the end."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    for v in dict.fromkeys(t[0] for t in todo):  # generate (and cache) each variant's training images once,
        store.dataset(v, "train", seed=0, data_dir=root)  # before the workers read them
    planned_keys = {(f"{v}-{a}", k, r) for v, a, k, r in todo}
    done: set[tuple[str, int, str]] = set()
    waiting = list(todo)
    running: dict[Any, tuple[str, int, str]] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        while waiting or running:
            for v, a, k, r in list(waiting):
                init = configs(r)[(v, a)].init
                if len(running) < args.jobs and (init is None or (init, k, r) in done
                                                 or (init, k, r) not in planned_keys):
                    waiting.remove((v, a, k, r))
                    print(f"{checkpoints.model_key(v, a, k, r)}: training ...", flush=True)
                    fut = pool.submit(_train_quietly, v, a, root, k, str(device), args.threads, r)
                    running[fut] = (f"{v}-{a}", k, r)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                rec = fut.result()
                done.add(key)
                _report(rec, root)
    card.write_card(root)
    return 0
