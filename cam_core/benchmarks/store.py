"""Where the embedded benchmark's files live, and the cache of its generated splits.

``<data_dir>/generated/<variant>-<split>-n<n>-seed<seed>-v<version>-<fingerprint>.pt`` holds a split as
uint8 images with its annotations (written atomically; an unreadable file is regenerated, not trusted);
``<data_dir>/models/`` holds the trained models (:mod:`cam_core.benchmarks.checkpoints`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from cam_core.benchmarks.generator import GENERATOR_VERSION, ShapesData, fingerprint, generate, spec

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    """``$CAM_CORE_DATA`` if set, else the repository's ``data/`` (next to the package), else
    ``~/.cache/cam_core`` (an installed, non-editable package)."""
    env = os.environ.get("CAM_CORE_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "data"
    return repo if repo.is_dir() else Path.home() / ".cache" / "cam_core"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data folder to use; a folder given explicitly must exist (a clear error if not)."""
    if data_dir is None:
        path = default_data_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"data_dir {str(path)!r} does not exist or is not a folder. Pass an existing folder (the "
            "embedded benchmark keeps its models in <data_dir>/models and its generated images in "
            "<data_dir>/generated), or data_dir=None for the default (the repository's data/ or "
            "$CAM_CORE_DATA)."
        )
    return path


def dataset(variant: str, split: str = "test", seed: int = 0, n: int | None = None,
            data_dir: str | os.PathLike[str] | None = None, cache: bool = True) -> ShapesData:
    """A split of ``variant`` (default size from :data:`generator.VARIANTS`), cached under
    ``<data_dir>/generated/``."""
    sp = spec(variant)
    n = n if n is not None else (sp.n_train if split == "train" else sp.n_test)
    if not cache:
        return generate(variant, n, seed, split)
    folder = resolve_data_dir(data_dir) / "generated"
    path = folder / f"{variant}-{split}-n{n}-seed{seed}-v{GENERATOR_VERSION}-{fingerprint(variant)}.pt"
    if path.exists():
        try:
            return ShapesData(**torch.load(path, weights_only=True))
        except Exception as err:  # a corrupt cache file is regenerated, not trusted
            log.warning("ignoring unreadable cache %s (%s); regenerating", path, err)
    data = generate(variant, n, seed, split)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(data.tensors(), tmp)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return data
