"""Finding a layer by dotted name (or by module) with errors that list the valid names."""
from __future__ import annotations

import difflib

import torch
from torch import nn


def layer_names(model: nn.Module) -> list[str]:
    """All dotted module names of ``model`` (the root excluded), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_call(model: nn.Module, target_layer: str | nn.Module) -> tuple[str, nn.Module, int | None]:
    """``(module path, module, call)`` for a layer given by dotted name, as a module (call None), or by
    the traced node name of one call of a module called more than once (``"_swish_1"`` ->
    ``("_swish", <ReLU6>, 1)``, see :func:`cam_core.graph_split.call_sites`)."""
    if isinstance(target_layer, str) and target_layer not in dict(model.named_modules()):
        from cam_core.model.graph_split import call_sites

        site = call_sites(model).get(target_layer)
        if site is not None:
            path, k = site
            return path, model.get_submodule(path), k
    name, module = resolve_layer(model, target_layer)
    return name, module, None


def resolve_layer(model: nn.Module, target_layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for ``target_layer`` given by dotted name, as the module itself, or
    by a traced call site's node name (``"_swish_1"``: the name is kept, the module is ``_swish``).

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
    from cam_core.model.graph_split import call_sites

    site = call_sites(model).get(target_layer)
    if site is not None:  # one call of a module called more than once
        return target_layer, modules[site[0]]
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


def returns_its_input(module: nn.Module) -> bool:
    """An Identity-like leaf: no parameters, buffers or children, and ``forward(self, x)`` is ``return x``."""
    code = getattr(type(module).forward, "__code__", None)
    return (code is not None and code.co_argcount == 2 and code.co_code == _identity.__code__.co_code
            and next(module.children(), None) is None and next(module.parameters(), None) is None
            and next(module.buffers(), None) is None)


def _identity(self: object, x: object) -> object:
    return x


#: short names of the modules :func:`chain_text` shows (the others by class name); "" leaves one out
_SHORT = {"AdaptiveAvgPool2d": "GAP", "AvgPool2d": "avg-pool", "MaxPool2d": "max-pool", "Linear": "FC",
          "Flatten": "", "Dropout": "", "Identity": ""}


def chain_text(module: nn.Module) -> str:
    """The leaf modules of ``module`` in order, short (``"GAP→FC"``, ``"avg-pool→FC→ReLU→FC→ReLU→FC"``): a head
    as a table cell shows it. Flatten, Dropout and Identity change no value and are left out."""
    names = [_SHORT.get(type(m).__name__, type(m).__name__) for m in module.modules() if not list(m.children())]
    return "→".join(n for n in names if n) or type(module).__name__
