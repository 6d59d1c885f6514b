"""Splitting a model at a layer into ``body`` (x -> A) and ``head`` (A -> logits).

LIFT-CAM, Ablation-CAM and SHAP-CAM evaluate ``F`` (the paper's head, layers l+1 .. L-1) on
changed activation maps without re-running the body. The split shares the caller's modules
(nothing is copied), so ``head(body(x)) == model(x)``.

Supported out of the box:
- any ``nn.Sequential`` (nested Sequentials too), split at any descendant that is reachable
  through Sequentials;
- torchvision ``VGG`` (11/13/16/19, with or without BN) and ``ResNet`` (18 .. 152, and the
  ResNeXt / wide variants that share the class), split at any top-level stage or any block
  of a ``layerN``;
- any model with a method ``cam_split(target_layer_name) -> (body, head)`` (the protocol
  this project's own models, e.g. the VQA model, implement);
- any other model torch.fx can trace (every torchvision CNN classifier), at a layer whose output
  is the only path from the input to the logits: the traced graph is cut there
  (:mod:`cam_core.model.graph_split`).

Anything else raises a ``ValueError`` that says why and how to pass a split yourself.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from cam_core.model.graph_split import TraceSplitError, traced_split
from cam_core.model.layers import resolve_call


class Split(NamedTuple):
    body: nn.Module  # x -> A, (N, C, H, W) -> (N, K, h, w)
    head: nn.Module  # A -> logits, (N, K, h, w) -> (N, num_classes)


def _as_sequential(model: nn.Module) -> nn.Sequential | None:
    """A Sequential view (sharing modules) of models whose forward is a plain chain."""
    if isinstance(model, nn.Sequential):
        return model
    try:
        from torchvision.models import VGG, ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if isinstance(model, VGG):
        return nn.Sequential(
            _Named([("features", model.features), ("avgpool", model.avgpool)]),
            nn.Flatten(1),
            _Named([("classifier", model.classifier)]),
        )
    if isinstance(model, ResNet):
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
        stem = [(n, getattr(model, n)) for n in names]
        return nn.Sequential(_Named(stem), nn.Flatten(1), _Named([("fc", model.fc)]))
    return None


class _Named(nn.Sequential):
    """A Sequential whose children keep the names they have in the original model."""

    def __init__(self, named: list[tuple[str, nn.Module]]):
        super().__init__()
        for name, module in named:
            self.add_module(name, module)


def _split_sequential(seq: nn.Sequential, path: list[str]) -> tuple[list[nn.Module], list[nn.Module]] | None:
    """Split a Sequential at the descendant named by ``path``; None if it is not reachable."""
    if not path:
        return None
    names = list(seq._modules.keys())
    # _Named wrappers (our own, for VGG/ResNet) are transparent: look inside them.
    for i, child in enumerate(seq._modules.values()):
        if isinstance(child, _Named) and path[0] in child._modules:
            inner = _split_sequential(child, path)
            if inner is None:
                return None
            before = list(seq._modules.values())[:i]
            after = list(seq._modules.values())[i + 1 :]
            return before + inner[0], inner[1] + after
    if path[0] not in names:
        return None
    i = names.index(path[0])
    children = list(seq._modules.values())
    child = children[i]
    if len(path) == 1:
        return children[: i + 1], children[i + 1 :]
    if isinstance(child, nn.Sequential):
        inner = _split_sequential(child, path[1:])
        if inner is None:
            return None
        return children[:i] + inner[0], inner[1] + children[i + 1 :]
    return None


def split_model(model: nn.Module, target_layer: str | nn.Module, call: int | None = None) -> Split:
    """Split ``model`` right after ``target_layer``: ``body, head = split_model(model, "features.29")``.

    A module called more than once (a shared activation) is cut at one call: ``call=k`` (forward
    order, ``-1`` the last) or ``target_layer`` the call site's traced node name (``"_swish_1"``).

    Tried in order: the model's own ``cam_split``; the hand-written chains (``nn.Sequential``,
    torchvision VGG / ResNet: plain ``nn.Sequential`` parts, which the first-linear shortcut of
    SHAP-CAM and Ablation-CAM recognises); then the traced graph cut at the layer
    (:mod:`cam_core.model.graph_split`, ``torch.fx.GraphModule`` parts) for any model torch.fx can trace.
    The returned modules share the caller's parameters and buffers; the caller's model is not
    changed. ``body(x)`` is the layer's output and ``head(body(x))`` equals ``model(x)`` (in eval mode).
    """
    name, module, site = resolve_call(model, target_layer)
    if call is not None and site is not None and call != site:
        raise ValueError(f"target_layer {target_layer!r} is call {site} of {name!r}; call={call} contradicts it")
    call = site if site is not None else call
    custom = getattr(model, "cam_split", None)
    if callable(custom) and call is None:
        body, head = custom(name)
        return Split(body, head)
    seq = _as_sequential(model) if call is None else None
    parts = _split_sequential(seq, name.split(".")) if seq is not None else None
    kind = type(model).__name__
    if parts is not None and parts[0] and not parts[1]:
        raise ValueError(f"cannot split {kind} at {name!r}: that layer is the last layer, so there is no "
                         "head left; choose the last convolutional block instead.")
    if parts is not None and parts[0]:
        return Split(nn.Sequential(*parts[0]), nn.Sequential(*parts[1]))
    try:
        return Split(*traced_split(model, module, call))
    except TraceSplitError as err:
        raise ValueError(
            f"cannot split {kind} at {name!r}: {err}. cam_core splits models torch.fx can trace, at a "
            "layer whose output is the only path to the logits, and models that define "
            "`cam_split(target_layer) -> (body, head)`. Otherwise pass the split yourself: "
            "`cc.LiftCAM(model, target_layer, split=(body, head))` with body(x) the layer's output and "
            "head(body(x)) == model(x); methods that only need gradients (Grad-CAM, ...) work without one."
        ) from err
