"""The executable book around the library: chapters, their parameters, the paper's tables, the course.

- :mod:`~cam_core.book.build`: ``python -m cam_core book`` (papermill, then Jupyter Book);
- :mod:`~cam_core.book.chapter`: the checks and folders every chapter starts with (``cc.chapter``);
- :mod:`~cam_core.book.paper`: the paper's published tables, the comparison with ours, its styling
  (``cc.paper``); :mod:`~cam_core.book.claims`: the prose a chapter may write from paired tests
  (``cc.claims``); :mod:`~cam_core.book.convergence`: Algorithm 1's error against the number of orderings;
- :mod:`~cam_core.book.course`: ``python -m cam_core course`` (nbgrader release and grading);
- :mod:`~cam_core.book.demo`: ``python -m cam_core demo`` (every method on a few images, one figure).

``cam_core.book.X`` is the builder's ``X`` (``find_chapters``, ...), loaded on first use.

May import: every package below it (model, kernels, metrics, methods, benchmarks, evaluation, vqa)
and the base modules. Only the command line (:mod:`cam_core.cli`) is above it (see
cam_core/ARCHITECTURE.md).
"""
from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = {"build", "chapter", "claims", "convergence", "course", "demo", "paper"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.build"), name)
