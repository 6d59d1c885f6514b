"""Device choice, seeding and eval mode: explicit, no global state beyond what torch/numpy own.

The bottom of the package: methods, kernels and metrics import from here, never the reverse.
"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

#: the device names the commands and the chapters' DEVICE parameter take
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``"auto" | "cpu" | "cuda" | "cuda:1" | torch.device | None`` to a ``torch.device``.

    ``"auto"`` (or ``None``) picks CUDA when available, else the CPU. A name torch does not know
    (``"tpu"``), or CUDA on a machine without it, raises a ``ValueError`` that lists the valid values.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; valid values: {', '.join(DEVICES)}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for but MPS is not available here; "
                         "use 'cpu' or 'auto'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here; "
                         "use 'cpu' or 'auto'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s) "
                         f"(cuda:0 .. cuda:{count - 1}); use one of them, 'cuda' or 'auto'.")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a CPU ``torch.Generator`` seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  seeds the legacy global state for code that uses it
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's ``training`` flag on exit (even on error)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def check_grad_mode(method: str) -> None:
    """Raise a clear error under ``torch.inference_mode()``, where no gradient can be taken."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} needs autograd, which torch.inference_mode() switches off; call it under "
            "torch.no_grad() or with no context manager (it takes the gradients it needs itself)."
        )
