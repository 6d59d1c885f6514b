"""The embedded benchmark's trained models on disk: checkpoints, their manifest, and loading.

``<data_dir>/models/<variant>-<arch>.pt`` holds ``{"state_dict", "record"}``; the record says how
the model was made (seed, schedule, timings, held-out scores, state hash) and for which
versions: :data:`generator.GENERATOR_VERSION` (the images) and :data:`CHECKPOINT_VERSION` (the
architectures of :mod:`cam_core.benchmarks.nets`). ``manifest.json`` collects every record.
A checkpoint made for other versions, or on images of another spec of its variant (the record's
``generator_fingerprint``, :func:`generator.fingerprint`), is refused with
:class:`CheckpointVersionError`, which says how to retrain (``python -m cam_core train --all`` or
``make models``).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cam_core.benchmarks import nets
from cam_core.benchmarks.generator import CLASS_NAMES, GENERATOR_VERSION, IMAGE_SIZE, fingerprint

CHECKPOINT_VERSION = 3  # bump when nets' architectures change (v3: VGG16-like head, 128 maps, issue 11)
RETRAIN = "`python -m cam_core train --all --jobs 2` (or `make models`; about 35 minutes on 2 CPU cores)"


class CheckpointVersionError(ValueError):
    """A checkpoint made for another generator or architecture version than this cam_core's."""


def checkpoint_path(data_dir: Path, variant: str, arch: str) -> Path:
    return Path(data_dir) / "models" / f"{variant}-{arch}.pt"


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """``<data_dir>/models/manifest.json`` (``{"models": {}}`` when there is none)."""
    path = Path(data_dir) / "models" / "manifest.json"
    if not path.exists():
        return {"models": {}}
    return json.loads(path.read_text())


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(model: nn.Module, record: dict[str, Any], data_dir: Path) -> Path:
    """Write ``<variant>-<arch>.pt`` (atomically) and its record into ``manifest.json``."""
    folder = Path(data_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(data_dir, record["variant"], record["arch"])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "record": record}, tmp)
    os.replace(tmp, path)
    with manifest_lock(folder):  # parallel trainings (`train --all --jobs 2`) each add their entry
        manifest = read_manifest(data_dir)
        manifest.setdefault("models", {})[f"{record['variant']}-{record['arch']}"] = record
        write_atomic(folder / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``<folder>/.manifest.lock`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: one training at a time
        yield
        return
    with open(Path(folder) / ".manifest.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, after checking that it was made for this cam_core's versions."""
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):  # the record holds torch.__version__
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    record = ckpt.get("record", {})
    made = (record.get("generator_version"), record.get("checkpoint_version"))
    if made != (GENERATOR_VERSION, CHECKPOINT_VERSION):
        raise CheckpointVersionError(
            f"{path} was trained for generator version {made[0]} / model version {made[1]}, but this "
            f"cam_core uses generator version {GENERATOR_VERSION} / model version {CHECKPOINT_VERSION} (its "
            "images and architectures differ, so the weights do not fit). Retrain the embedded models with "
            f"{RETRAIN}, "
            f"or one of them with `python -m cam_core train --benchmark {record.get('variant', '<variant>')} "
            f"--arch {record.get('arch', '<arch>')}`."
        )
    variant = record.get("variant")
    if variant is not None and record.get("generator_fingerprint") != fingerprint(variant):
        raise CheckpointVersionError(
            f"{path} was trained on {variant} images generated with other settings (fingerprint "
            f"{record.get('generator_fingerprint')}, this cam_core's: {fingerprint(variant)}): the variant's "
            "spec changed without a new generator version, so the model does not match the images it would "
            f"be scored on. Retrain it with `python -m cam_core train --benchmark {variant} --arch "
            f"{record.get('arch', '<arch>')}`, or all of them with {RETRAIN}."
        )
    return ckpt


def load_model(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The trained classifier (eval mode, on ``device``). A missing checkpoint is a clear error
    (:func:`cam_core.benchmarks.synthetic.load_model` can train it instead); so is an old one."""
    if arch not in nets.ARCHS + nets.TRANSFORMER_ARCHS:
        valid = ", ".join(nets.ARCHS + nets.TRANSFORMER_ARCHS)
        raise ValueError(f"unknown arch {arch!r}; choose one of {valid}")
    path = checkpoint_path(data_dir, variant, arch)
    if not path.exists():
        raise ValueError(
            f"no trained model at {path}. Train it with `python -m cam_core train --benchmark {variant} "
            f"--arch {arch}` (minutes on a CPU), all of them with {RETRAIN}, or load the benchmark with "
            "train_if_missing=True."
        )
    ckpt = read_checkpoint(path)
    model = nets.build(arch, len(CLASS_NAMES), IMAGE_SIZE)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device)
