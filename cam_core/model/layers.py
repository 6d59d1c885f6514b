"""Finding a layer by dotted name (or by module) with errors that list the valid names."""
from __future__ import annotations

import difflib

import torch
from torch import nn


def layer_names(model: nn.Module) -> list[str]:
    """All dotted module names of ``model`` (the root excluded), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, target_layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for ``target_layer`` given by name or as the module itself.

    Raises ``ValueError`` naming the closest valid names (and all of them, for small models).
    """
    if isinstance(target_layer, nn.Module):
        for name, module in model.named_modules():
            if module is target_layer:
                return name, module
        raise ValueError(
            "target_layer is a module that is not part of the model; pass one of the model's own "
            "submodules or its dotted name (see cam_core.layer_names(model))."
        )
    if not isinstance(target_layer, str):
        raise ValueError(
            f"target_layer must be a dotted name (str) or an nn.Module, got {type(target_layer).__name__}"
        )
    modules = dict(model.named_modules())
    if target_layer in modules and target_layer != "":
        return target_layer, modules[target_layer]
    names = layer_names(model)
    close = difflib.get_close_matches(target_layer, names, n=5, cutoff=0.5)
    listing = ", ".join(names) if len(names) <= 80 else ", ".join(names[:40]) + f", ... ({len(names)} in all)"
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"target_layer {target_layer!r} is not a layer of {type(model).__name__}.{hint} "
        f"Valid names: {listing}"
    )


def sequential_leaves(module: nn.Module) -> list[nn.Module]:
    """The chain of modules a plain (nested) ``nn.Sequential`` runs, in order; ``[module]`` for anything
    else (a Sequential subclass with its own ``forward`` is one step: its chain is not known)."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return [leaf for child in module for leaf in sequential_leaves(child)]
    return [module]


#: module types that only resample or pass a map on: never chosen by :func:`last_map_layer`
_PASS_ON = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)


def last_map_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The dotted name of the last layer (in the order their forwards finish on ``x``) whose output is a
    4-D map ``(N, K, h, w)`` with ``h * w > 1``, pools and dropouts left out: ``features`` for VGG,
    DenseNet, EfficientNet, ``layer4`` for ResNet, ``Mixed_7c`` for Inception v3."""
    done: list[str] = []
    names = {m: name for name, m in model.named_modules() if name}

    def hook(module: nn.Module, _inp: tuple, out: object) -> None:
        if (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1
                and not isinstance(module, _PASS_ON)):
            done.append(names[module])

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training:
            m.training = flag
    if not done:
        raise ValueError(f"{type(model).__name__} has no layer with a 4-D output (N, K, h, w) with h * w > 1 "
                         f"on an input of shape {tuple(x.shape)}")
    return done[-1]
