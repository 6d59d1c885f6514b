"""The CAM methods: one base class (``base.BaseCAM``) and one short class per method.

May import: the base modules, model, kernels (never metrics, benchmarks, evaluation, vqa, book;
see cam_core/ARCHITECTURE.md)."""
