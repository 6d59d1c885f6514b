"""The methods by the names the book's tables use: ``cc.METHODS["LIFT-CAM"]``, ``cc.get_method(...)``.

A new method is one import and one entry in :data:`METHODS` (its ``name`` is its table name).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from cam_core.methods.attention import AttentionRollout, CheferRelevance
from cam_core.methods.attribution import LIMECAM, LRPCAM, DeepSHAPCAM, KernelSHAPCAM
from cam_core.methods.base import BaseCAM
from cam_core.methods.eigen import EigenCAM
from cam_core.methods.gradient import CAM, GradCAM, GradCAMPlusPlus, ShapleyCAM, XGradCAM
from cam_core.methods.lift import LiftCAM
from cam_core.methods.perturbation import AblationCAM, ScoreCAM
from cam_core.methods.pixelwise import HiResCAM, LayerCAM
from cam_core.methods.shap import ShapCAM
from cam_core.names import lookup

#: every method by its table name ("CAM", "Grad-CAM", ..., "LIFT-CAM", "SHAP-CAM")
METHODS: dict[str, type[BaseCAM]] = {m.name: m for m in (
    CAM,
    GradCAM,
    GradCAMPlusPlus,
    XGradCAM,
    ScoreCAM,
    AblationCAM,
    LiftCAM,
    ShapCAM,
    LayerCAM,
    HiResCAM,
    EigenCAM,
    ShapleyCAM,
    LRPCAM,
    LIMECAM,
    DeepSHAPCAM,
    KernelSHAPCAM,
    AttentionRollout,
    CheferRelevance,
)}

#: the six methods of the paper's Tables 2-5, in the paper's order
PAPER_METHODS: list[str] = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM"]

#: CAMs users compare against today (pytorch-grad-cam 1.5's definitions)
RECENT_METHODS: list[str] = ["LayerCAM", "HiResCAM", "EigenCAM", "ShapleyCAM"]

#: the supplement's methods (coefficients from LRP, LIME, DeepSHAP, KernelSHAP)
SUPPLEMENT_METHODS: list[str] = ["LRP-CAM", "LIME-CAM", "DeepSHAP-CAM", "KernelSHAP-CAM"]

#: transformer explanations read from attention maps (nn.MultiheadAttention models only: ViT)
TRANSFORMER_METHODS: list[str] = ["Rollout", "Chefer"]


def method_class(name: str) -> tuple[str, type[BaseCAM]]:
    """``(table name, class)`` of the method called ``name``; case, dashes and spaces are ignored
    (``"liftcam"`` -> ``("LIFT-CAM", LiftCAM)``). An unknown name raises ``ValueError`` listing the
    valid ones."""
    return lookup(name, METHODS, "CAM method")


def get_method(name: str, model: nn.Module, target_layer: str | nn.Module, **kwargs: Any) -> BaseCAM:
    """Build the method called ``name`` (a table name such as ``"LIFT-CAM"``; case, dashes and spaces
    are ignored, so ``"liftcam"`` works too) on ``model`` at ``target_layer``; ``kwargs`` go to the class
    (e.g. ``batch_size``, or ``n_orderings`` / ``seed`` for SHAP-CAM)."""
    return method_class(name)[1](model, target_layer, **kwargs)
