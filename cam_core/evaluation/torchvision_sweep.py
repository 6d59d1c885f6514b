"""LIFT-CAM and Grad-CAM over every torchvision CNN classifier (issue 13's sweep).

For each model (``weights=None``, seeded, eval mode) at :func:`cam_core.model.map_layer.last_map_layer`, on
one random image: the split is checked (``body(x)`` is the layer's output, ``head(body(x))`` is
``model(x)``, both bit for bit), LIFT-CAM's and Grad-CAM's saliency must be finite, and LIFT-CAM's
summation-to-delta error is measured relative to ``|F^c(A) - F^c(0)|``, in float32 (``delta_rel``,
what a user gets) and with the head and ``A`` in float64 (``delta_rel_f64``: the rules are exact, so
only float64 rounding is left). ``piecewise_linear`` says whether the head only has ReLU-like /
max-pool non-linearities. ``resolvable`` is False where ``|F^c(A) - F^c(0)|`` is below 1000 float32
ulps of the logit (GoogLeNet's and Inception's old truncated-normal init, std 0.01, shrinks the maps
to ~1e-9): there the float32 difference is rounding noise and ``delta_rel`` is not meaningful.

Reproduce the committed table (CPU, ~1 h on 2 busy cores)::

    nice -n 10 python -m cam_core.evaluation.torchvision_sweep --out results/issue13_sweep.csv

Transformers (issue 24): ``--transformers`` sweeps the 12 transformer classifiers (ViT, Swin, Swin v2,
MaxViT) instead, at their :func:`~cam_core.model.map_layer.last_map_layer` (ViT: the token sequence entering
the last block, viewed as maps by :mod:`cam_core.model.tokens`) and, for Swin and MaxViT, whose last map's
head has no attention, also at an inner stage (:data:`INNER_LAYERS`: the head then runs window
attention). A classifier that torchvision starts at zero (ViT's ``heads.head``: constant logits, every map
0) is drawn from N(0, 0.02^2) first. The committed table: ``results/issue24_transformer_sweep.csv``::

    nice -n 10 python -m cam_core.evaluation.torchvision_sweep --transformers \
        --out results/issue24_transformer_sweep.csv
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.fx
import torchvision
from torch import nn

from cam_core.kernels.rescale import deeplift
from cam_core.methods.gradient import GradCAM
from cam_core.methods.lift import LiftCAM
from cam_core.model.map_layer import last_map_layer
from cam_core.model.token_split import token_split

__all__ = ["cnn_classifiers", "transformer_classifiers", "transformer_cuts", "sweep_one",
           "head_is_piecewise_linear", "PIECEWISE_LINEAR_TOL"]

#: summation-to-delta tolerance on piecewise-linear heads (issue 13), relative to |F^c(A) - F^c(0)|
PIECEWISE_LINEAR_TOL = 1e-4
#: torchvision classifiers that are not CNNs (transformers); maxvit_t mixes both and is left out too
NOT_CNN = ("vit_", "swin_", "maxvit_")
#: smallest input each family accepts (Inception v3 needs 75 px)
MIN_SIZE = {"inception_v3": 139, "maxvit_t": 224}  # below: Mixed_7c's maps 1x1; MaxViT's 7x7 partitions
#: inner stages of the transformers whose last map's head has no attention (their head then runs it)
INNER_LAYERS = {"swin_": "features.5", "maxvit_": "blocks.2"}

_PL_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d,
               nn.MaxPool3d)
_NON_LINEAR_FUNCTIONS = {"mul", "imul", "truediv", "layer_norm", "sigmoid", "tanh", "gelu", "silu",
                         "hardswish", "hardsigmoid", "elu", "softplus", "mish"}


def cnn_classifiers() -> list[str]:
    """The 68 CNN classifiers of ``torchvision.models`` (transformers left out)."""
    names = torchvision.models.list_models(module=torchvision.models)
    return [n for n in names if not n.startswith(NOT_CNN)]


def transformer_classifiers() -> list[str]:
    """The 12 transformer classifiers of ``torchvision.models`` (ViT, Swin, Swin v2, MaxViT)."""
    return [n for n in torchvision.models.list_models(module=torchvision.models) if n.startswith(NOT_CNN)]


def transformer_cuts(arch: str) -> list[str | None]:
    """The layers the sweep cuts ``arch`` at: its last map layer (None), and an inner stage where the
    last map's head has no attention (Swin, MaxViT)."""
    return [None, *(layer for prefix, layer in INNER_LAYERS.items() if arch.startswith(prefix))]


def _build(arch: str, size: int) -> nn.Module:
    kwargs = {"image_size": size} if arch.startswith("vit_") else {}  # ViT's position embedding is sized
    model = torchvision.models.get_model(arch, weights=None, **kwargs).eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and not linears[-1].weight.any():  # ViT's classifier starts at zero: constant logits
        nn.init.normal_(linears[-1].weight, std=0.02)
    return model


def head_is_piecewise_linear(head: nn.Module) -> bool:
    """True when the head's non-linearities are all ReLU-like or max-pools (modules and traced functions)."""
    from cam_core.kernels.deeplift_rules import RULES

    for m in head.modules():
        if type(m) in RULES and not isinstance(m, _PL_MODULES):
            return False
    if isinstance(head, torch.fx.GraphModule):
        for node in head.graph.nodes:
            name = getattr(node.target, "__name__", str(node.target)) if node.op != "call_module" else ""
            if node.op in ("call_function", "call_method") and name in _NON_LINEAR_FUNCTIONS:
                return False  # conservative: a product with a constant (layer scale) would be linear
    return True


def sweep_one(arch: str, size: int = 224, seed: int = 0, target: int = 1,
              float64: bool = True, layer: str | None = None) -> dict[str, object]:
    """Build ``arch`` (random weights), split it at ``layer`` (default: its last map layer; a token
    layer is viewed as maps), run LIFT-CAM and Grad-CAM (``float64=False`` skips the float64 re-run:
    ``delta_rel_f64`` is then NaN)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    size = max(size, MIN_SIZE.get(arch, 0))
    model = _build(arch, size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    layer = layer or last_map_layer(model, x)
    body, head = token_split(model, layer, x)
    seen: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: seen.setdefault("a", out.clone()))
    try:
        with torch.no_grad():
            logits = model(x)
            a = body(x)
            split_exact = (torch.equal(a, body.grid.to_map(seen["a"]))
                           and torch.equal(head(a.clone()), logits))
            f0 = head(torch.zeros_like(a))[:, target]
    finally:
        handle.remove()
    _, delta = deeplift(head, a, target, return_delta=True)
    scale = (logits[:, target] - f0).abs()
    ulp = torch.finfo(torch.float32).eps * torch.maximum(logits[:, target].abs(), f0.abs())
    lift = LiftCAM(model, layer)(x, target=target)
    grad = GradCAM(model, layer)(x, target=target)
    delta64, scale64 = torch.full((1,), float("nan")), torch.ones(1)
    if float64:
        model.double()  # the model is ours: float64 copy of the same weights for the rules' own error
        head = token_split(model, layer, x.double())[1]  # class tokens in float64
        with torch.no_grad():
            a64 = a.double()
            scale64 = (head(a64.clone()) - head(torch.zeros_like(a64)))[:, target].abs()
        _, delta64 = deeplift(head, a64, target, return_delta=True)
    return {
        "model": arch,
        "layer": layer,
        "input": size,
        "maps": "x".join(str(s) for s in a.shape[1:]),
        "split": "traced" if isinstance(head, torch.fx.GraphModule) else "hand-written",
        "split_exact": split_exact,
        "piecewise_linear": head_is_piecewise_linear(head),
        "lift_finite": bool(torch.isfinite(lift.saliency).all()),
        "gradcam_finite": bool(torch.isfinite(grad.saliency).all()),
        "resolvable": bool((scale > 1000 * ulp).all()),
        "delta_rel": float((delta.abs() / scale).max()),
        "delta_abs": float(delta.abs().max()),
        "delta_rel_f64": float((delta64.abs() / scale64).max()),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/issue13_sweep.csv"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--only", nargs="*", help="model names (default: all CNN classifiers)")
    parser.add_argument("--transformers", action="store_true",
                        help="the transformer classifiers (ViT, Swin, MaxViT) instead, with their inner cuts")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    archs = args.only or (transformer_classifiers() if args.transformers else cnn_classifiers())
    cuts = [(a, cut) for a in archs for cut in (transformer_cuts(a) if args.transformers else [None])]
    for arch, layer in cuts:
        row = sweep_one(arch, args.size, layer=layer)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as fh:  # rewritten after each model: a killed run keeps its rows
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        args.out.with_suffix(".md").write_text(markdown_table(rows))


def markdown_table(rows: list[dict[str, object]]) -> str:
    """The sweep as a Markdown table (what the README links to), written next to the CSV."""
    cols = ["model", "layer", "maps", "split", "split_exact", "lift_finite", "gradcam_finite",
            "piecewise_linear", "resolvable", "delta_rel", "delta_rel_f64"]
    fmt = {"delta_rel": "{:.1e}", "delta_rel_f64": "{:.1e}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
