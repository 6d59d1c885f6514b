"""The evaluation: the paper's tables from any benchmark, their statistics and their sanity rows.

- :mod:`~cam_core.evaluation.runner`: ``cc.evaluate`` (validate, plan batches, run, collect, summarise)
  and the ``evaluate`` command;
- :mod:`~cam_core.evaluation.batches`: one batch of images through every method and metric, and its
  cache file (the one batch function both executors call);
- :mod:`~cam_core.evaluation.ray_executor`: the same batches as Ray tasks (``executor="ray"``);
- :mod:`~cam_core.evaluation.statistics`: bootstrap intervals, paired tests, Holm;
- :mod:`~cam_core.evaluation.reference_maps`: the sanity maps (Box, Uniform, Random) scored as methods;
  :mod:`~cam_core.evaluation.sanity`: the warning when a metric cannot tell them from a method;
- :mod:`~cam_core.evaluation.results`: where result files go, written atomically;
- :mod:`~cam_core.evaluation.torchvision_sweep`: the split / DeepLIFT sweep over torchvision's models.

``cc.evaluation.X`` is the runner's ``X`` (``evaluate``, ``summarize``, ``paired``, ``paired_table``,
``ci_table``, ``cache_key``, ``METRICS``, ``SCALE``, ...), loaded on first use.

May import: the base modules, model, kernels, metrics, methods, benchmarks. Never vqa, book or the
command line (see cam_core/ARCHITECTURE.md).
"""
from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = {"batches", "ray_executor", "reference_maps", "results", "runner", "sanity", "statistics",
               "torchvision_sweep"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.runner"), name)
