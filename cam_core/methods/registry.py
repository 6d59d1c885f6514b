"""The methods by the names the book's tables use: ``cc.METHODS["LIFT-CAM"]``, ``cc.get_method(...)``."""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from cam_core.methods.base import BaseCAM
from cam_core.methods.gradient import CAM, GradCAM, GradCAMPlusPlus, XGradCAM
from cam_core.methods.perturbation import AblationCAM, ScoreCAM

#: table name -> (module, class) of the methods that live in their own modules
_OWN_MODULES = {
    "LIFT-CAM": ("cam_core.methods.lift", "LiftCAM"),
    "SHAP-CAM": ("cam_core.methods.shap", "ShapCAM"),
}


def _load(module: str, cls: str) -> type[BaseCAM] | None:
    """The class, or None only when its module is not there at all (any other import error propagates)."""
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as err:
        if err.name == module:
            return None
        raise


def _build() -> dict[str, type[BaseCAM]]:
    methods: dict[str, type[BaseCAM]] = {
        m.name: m for m in (CAM, GradCAM, GradCAMPlusPlus, XGradCAM, ScoreCAM, AblationCAM)
    }
    for name, (module, cls) in _OWN_MODULES.items():
        found = _load(module, cls)
        if found is not None:
            methods[name] = found
    return methods


#: every method by its table name ("CAM", "Grad-CAM", ..., "LIFT-CAM", "SHAP-CAM")
METHODS: dict[str, type[BaseCAM]] = _build()

#: the six methods of the paper's Tables 2-5, in the paper's order
PAPER_METHODS: list[str] = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM"]


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


def get_method(name: str, model: nn.Module, target_layer: str | nn.Module, **kwargs: Any) -> BaseCAM:
    """Build the method called ``name`` (a table name such as ``"LIFT-CAM"``; case, dashes and spaces
    are ignored, so ``"liftcam"`` works too) on ``model`` at ``target_layer``; ``kwargs`` go to the class
    (e.g. ``batch_size``, or ``n_orderings`` / ``seed`` for SHAP-CAM)."""
    if not isinstance(name, str):
        raise ValueError(f"method name must be a str, got {type(name).__name__}; "
                         f"valid names: {', '.join(METHODS)}")
    cls = METHODS.get(name) or {_key(k): v for k, v in METHODS.items()}.get(_key(name))
    if cls is None:
        missing = [k for k in _OWN_MODULES if k not in METHODS]
        note = f" ({', '.join(missing)} not available: its module is missing)" if missing else ""
        raise ValueError(f"unknown CAM method {name!r}; valid names: {', '.join(METHODS)}{note}")
    return cls(model, target_layer, **kwargs)
