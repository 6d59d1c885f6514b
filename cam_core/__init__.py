"""cam_core: LIFT-CAM and the CAM family (Jung & Oh, ICCV 2021), batched and tested.

Three lines for your own model::

    import cam_core as cc
    res = cc.LiftCAM(model, target_layer="features.29")(x)   # x: (N, C, H, W)
    res.saliency                                             # (N, H, W) in [0, 1]

Names are imported lazily so that ``import cam_core`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # methods (cam_core.methods.*)
    "BaseCAM": "cam_core.methods.base",
    "CAMResult": "cam_core.methods.base",
    "CAM": "cam_core.methods.gradient",
    "GradCAM": "cam_core.methods.gradient",
    "GradCAMPlusPlus": "cam_core.methods.gradient",
    "XGradCAM": "cam_core.methods.gradient",
    "ScoreCAM": "cam_core.methods.perturbation",
    "AblationCAM": "cam_core.methods.perturbation",
    "LiftCAM": "cam_core.methods.lift",
    "ShapCAM": "cam_core.methods.shap",
    "LayerCAM": "cam_core.methods.pixelwise",
    "HiResCAM": "cam_core.methods.pixelwise",
    "EigenCAM": "cam_core.methods.eigen",
    "ShapleyCAM": "cam_core.methods.gradient",
    "LRPCAM": "cam_core.methods.attribution",
    "LIMECAM": "cam_core.methods.attribution",
    "DeepSHAPCAM": "cam_core.methods.attribution",
    "KernelSHAPCAM": "cam_core.methods.attribution",
    "AttentionRollout": "cam_core.methods.attention",
    "CheferRelevance": "cam_core.methods.attention",
    "METHODS": "cam_core.methods.registry",
    "PAPER_METHODS": "cam_core.methods.registry",
    "SANITY_MAPS": "cam_core.evaluation.reference_maps",
    "RECENT_METHODS": "cam_core.methods.registry",
    "SUPPLEMENT_METHODS": "cam_core.methods.registry",
    "TRANSFORMER_METHODS": "cam_core.methods.registry",
    "get_method": "cam_core.methods.registry",
    # model split and layers
    "split_model": "cam_core.model.split",
    "Split": "cam_core.model.split",
    "resolve_layer": "cam_core.model.layers",
    "layer_names": "cam_core.model.layers",
    "last_map_layer": "cam_core.model.map_layer",
    "TokenGrid": "cam_core.model.tokens",
    "token_split": "cam_core.model.token_split",
    # kernels
    "deeplift": "cam_core.kernels.rescale",
    # runtime
    "seed_everything": "cam_core.runtime",
    "resolve_device": "cam_core.runtime",
    # evaluation
    "evaluate": "cam_core.evaluation.runner",
}
# cc.<name> -> the module it names (the package layout: cam_core/ARCHITECTURE.md)
_SUBMODULES: dict[str, str] = {
    "kernels": "cam_core.kernels",
    "model": "cam_core.model",
    "methods": "cam_core.methods",
    "metrics": "cam_core.metrics",
    "benchmarks": "cam_core.benchmarks",
    "evaluation": "cam_core.evaluation",
    "vqa": "cam_core.vqa",
    "book": "cam_core.book",
    "plotting": "cam_core.plotting",
    "shapley": "cam_core.kernels.shapley",
    "lrp": "cam_core.kernels.lrp",
    "surrogate": "cam_core.kernels.surrogate",
    "results": "cam_core.evaluation.results",
    "reference_maps": "cam_core.evaluation.reference_maps",
    "statistics": "cam_core.evaluation.statistics",
    "sanity": "cam_core.evaluation.sanity",
    "distributed": "cam_core.evaluation.ray_executor",
    "photo_study": "cam_core.evaluation.photo_study",
    "claims": "cam_core.book.claims",
    "chapter": "cam_core.book.chapter",
    "paper": "cam_core.book.paper",
    "convergence": "cam_core.book.convergence",
    # issue 20
    "contrast": "cam_core.evaluation.contrast",
    "fill_sensitivity": "cam_core.evaluation.fill_sensitivity",
    "randomization": "cam_core.evaluation.randomization",
    "seed_spread": "cam_core.evaluation.seed_spread",
    "recipe_ablation": "cam_core.evaluation.recipe_ablation",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'cam_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = sorted(_EXPORTS)
