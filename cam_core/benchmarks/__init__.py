"""Benchmarks behind one interface: ``cc.benchmarks.load(name, data_dir=None, device="auto")``.

``cc.benchmarks.available()`` lists the names. The embedded default (generated here from a
seed, small CNNs trained here) and the paper's real setup (ImageNet, VOC 2007, COCO 2014 with
torchvision / TorchRay VGG16) share the :class:`~cam_core.benchmarks.base.Benchmark` API.

May import: the base modules (figures from :mod:`cam_core.plotting`), model, kernels, metrics,
methods (never evaluation, vqa, book; see cam_core/ARCHITECTURE.md).
"""
from cam_core.benchmarks.base import Batch, Benchmark, available, load, load_seeds, register

__all__ = ["Batch", "Benchmark", "available", "load", "load_seeds", "register"]
