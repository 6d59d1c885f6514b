"""The layer a CAM explains by default: the last map layer that :func:`cam_core.split_model` can split at
(its own module: it uses the split, which uses :mod:`cam_core.model.layers`)."""
from __future__ import annotations

import torch
from torch import nn

from cam_core.model.graph_split import call_sites
from cam_core.model.layers import _PASS_ON, returns_its_input
from cam_core.model.split import split_model
from cam_core.model.tokens import last_token_layer  # a transformer's token layer, if later (issue 24)


def last_map_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The name of the last layer (in the order their forwards finish on ``x``) whose output is a 4-D map
    ``(N, K, h, w)`` with ``h * w > 1``, pools, dropouts and identities left out, and that
    :func:`cam_core.split_model` can split at: ``features`` for VGG, DenseNet, EfficientNet,
    ``layer4`` for ResNet, ``Mixed_7c`` for Inception v3, the call site ``"_swish_1"`` (the second
    call of the shared ``ReLU6``) for the EfficientNet-Lite package. A later layer the split refuses is
    passed over; if the model cannot be split anywhere, the last map layer is returned (gradient-only
    methods still work there through a hook). A transformer block that finishes later with a token sequence
    whose patch tokens reach the output is preferred (:func:`cam_core.model.tokens.last_token_layer`:
    ``encoder.layers.encoder_layer_10`` for ViT-B/16)."""
    done: list[tuple[str, int]] = []  # (module name, call number)
    names = {m: name for name, m in model.named_modules() if name}
    calls: dict[str, int] = {}

    def hook(module: nn.Module, _inp: tuple, out: object) -> None:
        name = names[module]
        k = calls.get(name, 0)
        calls[name] = k + 1
        if (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1
                and not isinstance(module, _PASS_ON) and not returns_its_input(module)):
            done.append((name, k))

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
    token = last_token_layer(model, x, after=done[-1][0] if done else None)
    if token is not None:
        return token
    if not done:
        raise ValueError(f"{type(model).__name__} has no layer with a 4-D output (N, K, h, w) with h * w > 1 "
                         f"on an input of shape {tuple(x.shape)}")
    sites: dict[tuple[str, int], str] | None = None
    candidates: list[str] = []
    for name, k in reversed(done):
        if calls[name] == 1:
            candidates.append(name)
            continue
        if sites is None:
            sites = {site: node for node, site in call_sites(model).items()}
        if (name, k) in sites:
            candidates.append(sites[(name, k)])
    for name in candidates:
        try:
            split_model(model, name)
        except ValueError:
            continue
        return name
    return done[-1][0]
