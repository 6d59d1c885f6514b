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
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam_core.benchmarks import nets, synthetic


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4


# per (variant, arch): the schedule that reaches the accuracy bar in a few CPU minutes
CONFIGS: dict[tuple[str, str], TrainConfig] = {
    ("shapes-single", "vgg"): TrainConfig(epochs=8),
    ("shapes-single", "resnet"): TrainConfig(epochs=8),
    ("shapes-multi", "vgg"): TrainConfig(epochs=10),
    ("shapes-multi", "resnet"): TrainConfig(epochs=10),
    ("shapes-clutter", "vgg"): TrainConfig(epochs=32),
    ("shapes-clutter", "resnet"): TrainConfig(epochs=12),
}


# ---- scores --------------------------------------------------------------------------------
def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision (the area under the precision-recall step curve, as VOC/COCO
    and sklearn's ``average_precision_score``): scores, targets (N, C) -> (C,). A class with no
    positive gets NaN. Ties are broken by order (stable sort), like sklearn without tied scores."""
    order = scores.argsort(dim=0, descending=True, stable=True)  # (N, C)
    hits = targets.gather(0, order).float()  # (N, C) 1 where the k-th ranked item is positive
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, hits.shape[0] + 1, device=scores.device, dtype=torch.float32)[:, None]
    positives = hits.sum(0)
    return (precision * hits).sum(0) / positives.where(positives > 0, torch.nan)


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """mAP over the classes that have at least one positive."""
    return float(average_precision(scores, targets).nanmean())


@torch.no_grad()
def score_model(model: nn.Module, data: synthetic.ShapesData, multilabel: bool, batch_size: int = 512,
                device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (single-label) or mAP (multi-label) of ``model`` on ``data``; the model's
    ``training`` flag is restored."""
    was = model.training
    model.eval()
    try:
        logits = torch.cat([model((data.x[i: i + batch_size].float() / 255).to(device)).cpu()
                            for i in range(0, len(data), batch_size)])
    finally:
        model.train(was)
    if multilabel:
        return mean_average_precision(logits, data.labels)
    return float((logits.argmax(1) == data.labels).float().mean())


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
    spec = synthetic.VARIANTS[variant]
    config = config or CONFIGS[(variant, arch)]
    train_data = synthetic.dataset(variant, "train", seed=0, n=n_train, data_dir=data_dir)
    n = len(train_data)
    steps_per_epoch = n // config.batch_size
    total = steps_per_epoch * config.epochs if max_steps is None else max_steps
    start = time.perf_counter()
    with deterministic(seed, threads, device):
        model = nets.build(arch, len(synthetic.CLASS_NAMES), synthetic.IMAGE_SIZE).to(device)
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
                x = train_data.x[idx].float().div_(255)  # (B, 3, S, S)
                k = int(torch.randint(4, (1,), generator=g))
                x = torch.rot90(x, k, dims=(2, 3)).to(device)  # shapes are rotation-free: labels keep
                y = train_data.labels[idx].to(device)
                logits = model(x)
                loss = (F.binary_cross_entropy_with_logits(logits, y) if spec.multilabel
                        else F.cross_entropy(logits, y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
    train_seconds = time.perf_counter() - start
    model = model.cpu().eval()
    record: dict[str, Any] = {
        "variant": variant, "arch": arch, "seed": seed, "data_seed": 0, "train_images": n, "steps": total,
        "config": asdict(config), "device": str(device), "threads": threads,
        "torch": str(torch.__version__), "cpu": platform.machine(), "processor": platform.processor() or "",
        "train_seconds": round(train_seconds, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "sha256": nets.state_dict_sha256(model),
        "generator_version": synthetic.GENERATOR_VERSION,
        "metric": "mAP" if spec.multilabel else "top-1",
    }
    if evaluate:
        test = synthetic.dataset(variant, "test", seed=0, data_dir=data_dir)
        record["score"] = round(score_model(model, test, spec.multilabel), 4)
        record["test_images"] = len(test)
    return model, record


# ---- files -----------------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(model: nn.Module, record: dict[str, Any], data_dir: Path, figure: bool = True) -> Path:
    """Write the checkpoint, update ``manifest.json`` and regenerate ``CARD.md`` (with its example
    figure, drawn when missing, if ``figure``)."""
    folder = data_dir / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = synthetic.checkpoint_path(data_dir, record["variant"], record["arch"])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "record": record}, tmp)
    os.replace(tmp, path)
    manifest = synthetic.read_manifest(data_dir)
    manifest.setdefault("models", {})[f"{record['variant']}-{record['arch']}"] = record
    _write_atomic(folder / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_card(data_dir, figure=figure)
    return path


def write_card(data_dir: Path, figure: bool = True) -> Path:
    """Regenerate ``<data_dir>/models/CARD.md`` (and its example figure when missing)."""
    folder = data_dir / "models"
    fig_name = "examples.png"
    if figure and not (folder / fig_name).exists():
        try:
            from cam_core.plotting import dataset_examples

            dataset_examples(data_dir=data_dir, out=folder / fig_name)
        except Exception as err:  # the figure is a nicety: the card (and the model) are still written
            import logging

            logging.getLogger(__name__).warning("could not draw %s (%s); card written without it",
                                                fig_name, err)
            figure = False
    card = synthetic.dataset_card(synthetic.read_manifest(data_dir), figure=fig_name if figure else None)
    _write_atomic(folder / "CARD.md", card)
    return folder / "CARD.md"


def train_and_save(variant: str, arch: str, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                   device: torch.device | str = "cpu", threads: int = 1,
                   progress: bool = True) -> dict[str, Any]:
    """Train ``variant``/``arch`` and write its checkpoint, the manifest entry and the card."""
    root = synthetic.resolve_data_dir(data_dir)
    model, record = train(variant, arch, seed=seed, device=device, threads=threads, data_dir=root,
                          progress=progress)
    save(model, record, root)
    return record


def check(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu",
          progress: bool = True) -> tuple[bool, str]:
    """Retrain ``variant``/``arch`` into a temp dir with the recorded seed and threads, and compare the
    state hash with the manifest's. Returns ``(same, explanation)``."""
    key = f"{variant}-{arch}"
    rec = synthetic.read_manifest(data_dir).get("models", {}).get(key)
    if rec is None:
        return False, f"{key}: not in the manifest; train it first"
    tmp = Path(tempfile.mkdtemp(prefix="cam_core_check_"))
    try:
        gen = data_dir / "generated"
        if gen.is_dir():  # reuse the cached images (they are deterministic too)
            (tmp / "generated").symlink_to(gen.resolve())
        _, new = train(variant, arch, seed=rec["seed"], device=device, threads=rec["threads"], data_dir=tmp,
                       progress=progress, evaluate=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if new["sha256"] == rec["sha256"]:
        return True, f"{key}: bit-for-bit identical (sha256 {rec['sha256'][:16]})"
    fields = ("torch", "device", "cpu", "processor", "generator_version", "config")
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
    which.add_argument("--benchmark", choices=list(synthetic.VARIANTS), help="one variant")
    p.add_argument("--arch", choices=list(nets.ARCHS), default=None, help="one architecture (default: both)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default; what the committed hashes are for), cuda, auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training (recorded; default 1)")
    p.add_argument("--data-dir", default=None, help="where models/ and generated/ live (default: repo data/)")
    p.add_argument("--check", action="store_true", help="retrain in a temp dir and compare with the manifest")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cam_core.runtime import resolve_device

    device = resolve_device(args.device)
    root = synthetic.resolve_data_dir(args.data_dir)
    variants = list(synthetic.VARIANTS) if args.all else [args.benchmark]
    archs = [args.arch] if args.arch else list(nets.ARCHS)
    failed = 0
    for v in variants:
        for a in archs:
            if args.check:
                same, msg = check(v, a, root, device)
                failed += not same
                print(msg, flush=True)
                continue
            rec = train_and_save(v, a, data_dir=root, seed=args.seed, device=device, threads=args.threads)
            print(f"{v}-{a}: held-out {rec['metric']} {rec['score']:.4f} in {rec['train_seconds']:.0f} s "
                  f"-> {synthetic.checkpoint_path(root, v, a)}", flush=True)
    return 1 if failed else 0
