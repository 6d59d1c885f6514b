"""Cutting a model's traced graph at a layer: the split of :func:`cam_core.split_model` for any model
torch.fx can trace (every torchvision CNN classifier: DenseNet, EfficientNet, MobileNet, ConvNeXt, ...).

The model is traced symbolically (``torch.fx``) in eval mode with the target layer kept as one call
(a leaf of the trace). The graph is cut at that call: ``body`` is every node the layer's output
needs, ``head`` every node the model's output needs after it, with the layer's output as its only
input. Both are ``torch.fx.GraphModule``s that share the caller's modules and parameters and run
exactly the model's operations in the model's order, so ``head(body(x))`` equals ``model(x)``
bit for bit (in eval mode: training-only branches such as GoogLeNet's auxiliary classifiers are
not traced). Functional in-place ops of the head (DenseNet's ``F.relu(A, inplace=True)``) are made
out-of-place, so ``head(A)`` never changes the caller's ``A``.

A cut is refused (``ValueError`` with the reason) when the model cannot be traced (Python control
flow on tensor values), when the layer is called more than once (a shared module such as
torchvision ResNet's ``self.relu``) or not at all, or when the output also depends on the input
through a path around the layer (a skip connection over it, a dense block's concatenation).
"""
from __future__ import annotations

import torch.fx
from torch import nn

from cam_core.runtime import eval_mode

__all__ = ["traced_split", "TraceSplitError"]


class TraceSplitError(ValueError):
    """The traced graph cannot be cut at the layer; the message says why."""


class _CutTracer(torch.fx.Tracer):
    """torch.fx's default tracer, with the target layer traced as one call."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.layer or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module, layer: nn.Module) -> tuple[torch.fx.Graph, str]:
    tracer = _CutTracer(layer)
    with eval_mode(model):
        try:
            graph = tracer.trace(model)
        except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ... for untraceable code
            first = str(err).splitlines()[0] if str(err) else ""
            raise TraceSplitError(
                f"torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {first})") from err
    return graph, tracer.path_of_module(layer)


def _ancestors(node: torch.fx.Node, stop: torch.fx.Node | None = None) -> set[torch.fx.Node]:
    """``node`` and every node it depends on, not looking past ``stop`` (which is left out)."""
    seen: set[torch.fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n is stop or n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def traced_split(model: nn.Module, layer: nn.Module) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """``(body, head)`` of ``model`` cut right after ``layer`` (one of its submodules)."""
    graph, path = _trace(model, layer)
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == path]
    if len(calls) != 1:
        why = f"is called {len(calls)} times (a shared module)" if calls else "is never called in eval mode"
        raise TraceSplitError(
            f"layer {path!r} {why}; choose a layer that runs once, e.g. the block around it")
    cut = calls[0]
    (output,) = [n for n in nodes if n.op == "output"]

    # nodes that depend on the model's input other than through the layer
    around: set[torch.fx.Node] = set()
    for node in nodes:
        if node is not cut and (node.op == "placeholder" or any(i in around for i in node.all_input_nodes)):
            around.add(node)
    needed = _ancestors(output, stop=cut)  # what the model's output needs once the layer's is known
    bypass = sorted((n.name for n in needed & around), key=[n.name for n in nodes].index)
    if bypass:
        raise TraceSplitError(
            f"the model's output depends on its input through a path around {path!r} (via "
            f"{', '.join(bypass[-3:])}): a skip connection or concatenation crosses the cut; choose the "
            "layer at the end of a stage or block")
    if not any(cut in n.all_input_nodes for n in needed):
        raise TraceSplitError(f"the model's output does not depend on layer {path!r}")

    body_graph = torch.fx.Graph()
    in_body = _ancestors(cut) | {n for n in nodes if n.op == "placeholder"}  # keep the model's signature
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in nodes:
        if node in in_body:
            env[node] = body_graph.node_copy(node, env.__getitem__)
    body_graph.output(env[cut])

    head_graph = torch.fx.Graph()
    env = {cut: head_graph.placeholder("activations")}
    for node in nodes:
        if node in needed:
            env[node] = head_graph.node_copy(node, env.__getitem__)
            if node.op in ("call_function", "call_method") and node.kwargs.get("inplace") is True:
                env[node].kwargs = {**node.kwargs, "inplace": False}  # never write into the caller's A
    name = type(model).__name__
    return (torch.fx.GraphModule(model, body_graph, class_name=f"{name}Body"),
            torch.fx.GraphModule(model, head_graph, class_name=f"{name}Head"))
