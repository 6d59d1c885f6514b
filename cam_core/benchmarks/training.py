"""Training the embedded benchmark's CNNs, deterministically, and the ``train`` command.

    python -m cam_core train --all                                   # the six models
    python -m cam_core train --benchmark shapes-single --arch vgg    # one of them
    python -m cam_core train --all --check                           # retrain in a temp dir, compare hashes

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
    init: str | None = None  # "<variant>-<arch>": start from that trained model (same data_dir)


# per (variant, arch): the schedule. Shape recognition in clutter starts with a long plateau (v3's
# single-label VGG-style model stayed at chance level for 2,500 steps), so each architecture is trained
# once from a random start on shapes-multi (2-3 objects per image: the most labels per step), and the
# single-label and clutter models are fine-tuned from it (the same 12 classes, drawn the same way):
# `train --all` trains it first. Measured (1 thread each, `--jobs 2`): 21 + 13 min from scratch, 3-6 min
# per fine-tune, 31 min in all; every model >= 0.99 top-1 / mAP (data/models/CARD.md).
_FINE_TUNE = TrainConfig(epochs=10, batch_size=64, lr=1.5e-3, mask_share=0.4, mask_ramp=0.0)
CONFIGS: dict[tuple[str, str], TrainConfig] = {
    ("shapes-multi", "vgg"): TrainConfig(epochs=36, batch_size=64, lr=3e-3, mask_share=0.4),
    ("shapes-multi", "resnet"): TrainConfig(epochs=36, batch_size=64, lr=3e-3, mask_share=0.4),
    ("shapes-single", "vgg"): replace(_FINE_TUNE, init="shapes-multi-vgg"),
    ("shapes-single", "resnet"): replace(_FINE_TUNE, init="shapes-multi-resnet"),
    ("shapes-clutter", "vgg"): replace(_FINE_TUNE, init="shapes-multi-vgg"),
    ("shapes-clutter", "resnet"): replace(_FINE_TUNE, init="shapes-multi-resnet"),
    # issue 24's small ViT (nets.ShapesViT), from scratch, single-label only: `train --benchmark shapes-single
    # --arch vit` (not in --all)
    ("shapes-single", "vit"): TrainConfig(epochs=3, batch_size=64, lr=2e-3, mask_share=0.4,
                                          init="shapes-single-resnet"),
}


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
          evaluate: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``arch`` on ``variant``'s train split; return the model (eval mode, CPU) and its record
    (seed, held-out score, state hash, timings). ``max_steps``/``n_train`` shorten it (tests)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    spec = generator.spec(variant)
    config = config or CONFIGS[(variant, arch)]
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
            init_path = checkpoints.checkpoint_path(store.resolve_data_dir(data_dir), init_variant, init_arch)
            if not init_path.exists():
                raise ValueError(f"{variant}/{arch} starts from {config.init}, which is not trained yet "
                                 f"({init_path}); train it first (`python -m cam_core train --benchmark "
                                 f"{init_variant} --arch {init_arch}`), or use `train --all`")
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
                x, evidence = augment.augment(x, g, share, train_data.boxes[idx])
                x = generator.normalize(x).to(device)
                x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
                y = augment.evidence_targets(train_data.labels[idx], train_data.box_labels[idx], evidence,
                                             len(generator.CLASS_NAMES), spec.multilabel).to(device)
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
        "variant": variant, "arch": arch, "seed": seed, "data_seed": 0, "train_images": n, "steps": total,
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
                   progress: bool = True) -> dict[str, Any]:
    """Train ``variant``/``arch`` and write its checkpoint, the manifest entry and the card."""
    root = store.resolve_data_dir(data_dir)
    model, record = train(variant, arch, seed=seed, device=device, threads=threads, data_dir=root,
                          progress=progress)
    save(model, record, root)
    return record


def check(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu",
          progress: bool = True) -> tuple[bool, str]:
    """Retrain ``variant``/``arch`` into a temp dir with the recorded seed and threads, and compare the
    state hash with the manifest's. Returns ``(same, explanation)``."""
    key = f"{variant}-{arch}"
    rec = checkpoints.read_manifest(data_dir).get("models", {}).get(key)
    if rec is None:
        return False, f"{key}: not in the manifest; train it first"
    tmp = Path(tempfile.mkdtemp(prefix="cam_core_check_"))
    try:
        gen = data_dir / "generated"
        if gen.is_dir():  # reuse the cached images (they are deterministic too)
            (tmp / "generated").symlink_to(gen.resolve())
        init = CONFIGS[(variant, arch)].init
        if init:  # the model it starts from, as committed
            (tmp / "models").mkdir()
            src = checkpoints.checkpoint_path(data_dir, *init.rsplit("-", 1))
            if src.exists():  # (if not, train says which model to train first)
                shutil.copy(src, tmp / "models" / src.name)
        _, new = train(variant, arch, seed=rec["seed"], device=device, threads=rec["threads"], data_dir=tmp,
                       progress=progress, evaluate=False)
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
    which.add_argument("--all", action="store_true", help="every variant x architecture")
    which.add_argument("--benchmark", choices=list(generator.VARIANTS), help="one variant")
    p.add_argument("--arch", choices=[*nets.ARCHS, *nets.TRANSFORMER_ARCHS], default=None,
                   help="one architecture (default: vgg and resnet; vit: shapes-single only)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default; what the committed hashes are for), cuda, auto")
    p.add_argument("--seed", type=int, default=0)
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
    variants = list(generator.VARIANTS) if args.all else [args.benchmark]
    archs = [args.arch] if args.arch else list(nets.ARCHS)
    todo = [(v, a) for v in variants for a in archs]
    todo.sort(key=lambda va: CONFIGS[va].init is not None)  # models others start from come first
    failed = 0
    if args.jobs > 1 and not args.check:
        return _run_parallel(todo, root, args, device)
    for v, a in todo:
        if args.check:
            same, msg = check(v, a, root, device)
            failed += not same
            print(msg, flush=True)
            continue
        rec = train_and_save(v, a, data_dir=root, seed=args.seed, device=device, threads=args.threads)
        _report(rec, root)
    return 1 if failed else 0


def _report(rec: dict[str, Any], root: Path) -> None:
    print(f"{rec['variant']}-{rec['arch']}: held-out {rec['metric']} {rec['score']:.4f} "
          f"(top-1 softmax > 0.99: {rec['share_above_0.99']:.3f}, ECE {rec['ece']:.3f}) in "
          f"{rec['train_seconds']:.0f} s -> {checkpoints.checkpoint_path(root, rec['variant'], rec['arch'])}",
          flush=True)


def _train_quietly(variant: str, arch: str, root: Path, seed: int, device: str,
                   threads: int) -> dict[str, Any]:
    """One ``--jobs`` worker: train and write the checkpoint and manifest entry (the card is the parent's)."""
    model, record = train(variant, arch, seed=seed, device=device, threads=threads, data_dir=root,
                          progress=False)
    checkpoints.save_checkpoint(model, record, root)
    return record


def _run_parallel(todo: list[tuple[str, str]], root: Path, args: argparse.Namespace,
                  device: torch.device) -> int:
    """``train --jobs N``: up to N trainings at once in spawned processes; a model that starts from
    another (``TrainConfig.init``) waits for it. The card is written once, at the end."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    for v in dict.fromkeys(v for v, _ in todo):  # generate (and cache) each variant's training images once,
        store.dataset(v, "train", seed=0, data_dir=root)  # before the workers read them
    planned = {f"{v}-{a}" for v, a in todo}
    done: set[str] = set()
    waiting = list(todo)
    running: dict[Any, str] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        while waiting or running:
            for v, a in list(waiting):
                init = CONFIGS[(v, a)].init
                if len(running) < args.jobs and (init is None or init in done or init not in planned):
                    waiting.remove((v, a))
                    print(f"{v}-{a}: training ...", flush=True)
                    fut = pool.submit(_train_quietly, v, a, root, args.seed, str(device), args.threads)
                    running[fut] = f"{v}-{a}"
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                rec = fut.result()
                done.add(key)
                _report(rec, root)
    card.write_card(root)
    return 0
