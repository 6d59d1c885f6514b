"""The embedded benchmark's trained models on disk: checkpoints, their manifest, and loading.

``<data_dir>/models/<key>.pt`` holds ``{"state_dict", "record"}``, with ``key`` from
:func:`model_key`: ``<variant>-<arch>`` for the default model (label recipe, model seed 0),
``-seed<k>`` appended for the other independently trained seeds, ``-evidence`` for the v4 recipe
kept as an ablation (``config["target"]``: ``"label"`` or ``"evidence"``). The record says how
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
RETRAIN = "`python -m cam_core train --all --jobs 2` (or `make models`; the twelve label-recipe CNNs, the six evidence-recipe CNNs and the small ViT, about an hour and a half on 2 CPU cores)"


class CheckpointVersionError(ValueError):
    """A checkpoint made for another generator or architecture version than this cam_core's."""


TARGETS: tuple[str, ...] = ("label", "evidence")  # the training recipes (TrainConfig.target)


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown recipe {target!r}: choose one of {', '.join(TARGETS)} ('label': trained on "
                         "labels only, the default; 'evidence': benchmark v4's box-evidence target, an ablation)")
    return target


def model_key(variant: str, arch: str, model_seed: int = 0, target: str = "label") -> str:
    """The model's name in the manifest and its file stem: ``<variant>-<arch>[-evidence][-seed<k>]``."""
    check_target(target)
    if not isinstance(model_seed, int) or isinstance(model_seed, bool) or model_seed < 0:
        raise ValueError(f"model_seed must be an int >= 0 (0: the default model), got {model_seed!r}")
    return (f"{variant}-{arch}" + ("" if target == "label" else f"-{target}")
            + ("" if model_seed == 0 else f"-seed{model_seed}"))


def record_key(record: dict[str, Any]) -> str:
    """:func:`model_key` of a checkpoint's record (a record without ``config["target"]``, as before
    issue 20, keeps its old name ``<variant>-<arch>``)."""
    target = (record.get("config") or {}).get("target", "label")
    return model_key(record["variant"], record["arch"], int(record.get("seed", 0)), target)


def record_target(record: dict[str, Any]) -> str:
    """The recipe a record was trained with; a record without ``config["target"]`` (benchmark v4, before
    issue 20) was trained on box evidence."""
    return str((record.get("config") or {}).get("target", "evidence"))


def checkpoint_path(data_dir: Path, variant: str, arch: str, model_seed: int = 0, target: str = "label") -> Path:
    return Path(data_dir) / "models" / f"{model_key(variant, arch, model_seed, target)}.pt"


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
    """Write ``<key>.pt`` (atomically; :func:`record_key`) and its record into ``manifest.json``."""
    folder = Path(data_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    key = record_key(record)
    path = folder / f"{key}.pt"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "record": record}, tmp)
    os.replace(tmp, path)
    with manifest_lock(folder):  # parallel trainings (`train --all --jobs 2`) each add their entry
        manifest = read_manifest(data_dir)
        manifest.setdefault("models", {})[key] = record
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


def train_command(variant: str, arch: str, model_seed: int = 0, target: str = "label") -> str:
    """The command that trains one model."""
    return (f"python -m cam_core train --benchmark {variant} --arch {arch}"
            + (f" --model-seed {model_seed}" if model_seed else "") + ("" if target == "label" else f" --recipe {target}"))


def load_model(variant: str, arch: str, data_dir: Path, device: torch.device | str = "cpu", model_seed: int = 0,
               target: str = "label") -> nn.Module:
    """The trained classifier (eval mode, on ``device``). A missing checkpoint is a clear error
    (:func:`cam_core.benchmarks.synthetic.load_model` can train it instead); so is an old one, and one
    whose record says another recipe or seed than its name (a v4 file left under the default name)."""
    if arch not in nets.ARCHS + nets.TRANSFORMER_ARCHS:
        valid = ", ".join(nets.ARCHS + nets.TRANSFORMER_ARCHS)
        raise ValueError(f"unknown arch {arch!r}; choose one of {valid}")
    path = checkpoint_path(data_dir, variant, arch, model_seed, target)
    if not path.exists():
        raise ValueError(
            f"no trained model at {path}. Train it with `{train_command(variant, arch, model_seed, target)}` "
            f"(minutes on a CPU), all of them with {RETRAIN}, or load the benchmark with train_if_missing=True."
        )
    ckpt = read_checkpoint(path)
    record = ckpt.get("record", {})
    made = (record_target(record), int(record.get("seed", 0)))
    if made != (target, model_seed):
        raise CheckpointVersionError(
            f"{path} holds a model trained with the {made[0]!r} recipe and model seed {made[1]}, but its name is "
            f"the one of recipe {target!r}, model seed {model_seed} (a file of an older cam_core: benchmark v4's "
            "models were trained on box-evidence targets). Retrain it with "
            f"`{train_command(variant, arch, model_seed, target)}`, or all of them with {RETRAIN}."
        )
    model = nets.build(arch, len(CLASS_NAMES), IMAGE_SIZE)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device)
