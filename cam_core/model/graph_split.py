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

Models as people write them: a read of a tensor's shape (``x.size(0)``, ``x.shape``, ``x.dim()``,
``x.numel()``) is not a data path, so ``x.view(x.size(0), -1)`` after the layer does not count as a
path around it; in the head, a read of the input's batch size is read off the activations instead
(the batch is the same; the head is also evaluated on batches of another size). A module called
more than once (one ``ReLU6`` for the stem and the head) is cut at one call site: ``call=k`` (the
k-th call in forward order, ``-1`` the last) or the traced node name (``"_swish_1"``).

A cut is refused (``ValueError`` with the reason) when the model cannot be traced (Python control
flow on tensor values), when the layer is called more than once and no call site is given, or not
at all, when the output also depends on the input through a path around the layer (a skip
connection over it, a dense block's concatenation), or when the head reads the input's shape beyond
its batch size.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from cam_core.runtime import eval_mode

__all__ = ["traced_split", "TraceSplitError", "call_sites", "as_chain"]


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


def call_sites(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{traced node name: (module path, k)}`` for every module call in ``model``'s default trace
    (``"_swish_1": ("_swish", 1)``); ``{}`` if torch.fx cannot trace it."""
    try:
        with eval_mode(model):
            tracer = torch.fx.Tracer()
            graph = tracer.trace(model)
    except Exception:  # untraceable: no node names
        return {}
    counts: dict[str, int] = {}
    sites: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            k = counts.get(node.target, 0)
            counts[node.target] = k + 1
            sites[node.name] = (str(node.target), k)
    return sites


_SHAPE_METHODS = ("size", "dim", "numel")
_SHAPE_ATTRS = ("shape", "ndim")


def _is_shape_read(node: torch.fx.Node) -> bool:
    """``x.size(...)``, ``x.dim()``, ``x.numel()``, ``x.shape``, ``x.ndim``, ``torch.numel(x)``: no data."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
        return node.target is torch.numel
    return False


def _batch_read(node: torch.fx.Node, needed: set[torch.fx.Node]) -> str | None:
    """How the head uses the shape read ``node``: ``"dim0"`` (``x.size(0)``), ``"size"`` (``x.size()`` /
    ``x.shape`` indexed only at 0), or None (a read the activations cannot answer)."""
    if node.op == "call_method" and node.target == "size":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim is not None:
            return "dim0" if dim == 0 else None
    elif not (node.op == "call_function" and node.target is getattr and node.args[1] == "shape"):
        return None
    users = [u for u in node.users if u in needed]
    ok = all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0 for u in users)
    return "size" if ok else None


def _ancestors(node: torch.fx.Node, stop: torch.fx.Node | None = None,
               leaves: set[torch.fx.Node] | None = None) -> set[torch.fx.Node]:
    """``node`` and every node it depends on, not looking past ``stop`` (which is left out) nor past
    ``leaves`` (which are kept)."""
    seen: set[torch.fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n is stop or n in seen:
            continue
        seen.add(n)
        if leaves is None or n not in leaves:
            stack.extend(n.all_input_nodes)
    return seen


def traced_split(model: nn.Module, layer: nn.Module, call: int | None = None
                 ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """``(body, head)`` of ``model`` cut right after ``layer`` (one of its submodules), at its call
    number ``call`` (forward order, negative from the end) when it is called more than once."""
    graph, path = _trace(model, layer)
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == path]
    if not calls:
        raise TraceSplitError(f"layer {path!r} is never called in eval mode; choose a layer that runs")
    if call is None and len(calls) > 1:
        names = ", ".join(n.name for n in calls)
        raise TraceSplitError(
            f"layer {path!r} is called {len(calls)} times (a shared module; traced call sites {names}); "
            f"cut at one call: split_model(model, {path!r}, call=k) with k in 0..{len(calls) - 1} (-1 for "
            f"the last) or the call site's node name, e.g. {calls[-1].name!r}, or choose a layer that runs once")
    if call is not None and not -len(calls) <= call < len(calls):
        raise TraceSplitError(f"call={call} is out of range: layer {path!r} is called {len(calls)} times "
                              f"(valid: {-len(calls)} .. {len(calls) - 1})")
    cut = calls[0 if call is None else call]
    (output,) = [n for n in nodes if n.op == "output"]

    # nodes that depend on the model's input other than through the layer (reads of a shape carry no data)
    around: set[torch.fx.Node] = set()
    for node in nodes:
        if node is cut:
            continue
        if node.op == "placeholder" or (not _is_shape_read(node)
                                        and any(i in around for i in node.all_input_nodes)):
            around.add(node)
    shape_reads = {n for n in nodes if _is_shape_read(n) and n.all_input_nodes
                   and n.all_input_nodes[0] in around}
    # what the model's output needs once the layer's output is known
    needed = _ancestors(output, stop=cut, leaves=shape_reads)
    reads = {n: _batch_read(n, needed) for n in needed & shape_reads}
    for n, how in reads.items():
        if how is None:
            raise TraceSplitError(
                f"the head reads the shape of the input beyond its batch size ({n.name} = "
                f"{n.format_node()}), which the layer's output cannot give; choose a later layer")
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
        if node in reads:  # the batch size, read off the activations
            args = (env[cut], 0) if reads[node] == "dim0" else (env[cut],)
            env[node] = head_graph.call_method("size", args)
        elif node in needed:
            env[node] = head_graph.node_copy(node, env.__getitem__)
            if node.op in ("call_function", "call_method") and node.kwargs.get("inplace") is True:
                env[node].kwargs = {**node.kwargs, "inplace": False}  # never write into the caller's A
    name = type(model).__name__
    return (torch.fx.GraphModule(model, body_graph, class_name=f"{name}Body"),
            torch.fx.GraphModule(model, head_graph, class_name=f"{name}Head"))


_POINTWISE_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6}
_CONV_FUNCTIONS = (F.conv2d, torch.conv2d)


def _flatten_step(node: torch.fx.Node, prev: torch.fx.Node, shapes: set[torch.fx.Node]) -> nn.Module | None:
    """``x.view(bs, -1)`` / ``x.reshape(bs, -1)`` (bs a batch-size read), ``x.flatten(1)``,
    ``torch.flatten(x, 1)``: ``nn.Flatten(1)``."""
    args = node.args
    if node.op == "call_method" and node.target in ("view", "reshape") and len(args) == 3:
        if args[0] is prev and args[1] in shapes and args[2] == -1:
            return nn.Flatten(1)
    flat = (node.op == "call_method" and node.target == "flatten") or (
        node.op == "call_function" and node.target is torch.flatten)
    if flat and args[0] is prev and tuple(args[1:]) in ((1,), (1, -1)) and not node.kwargs:
        return nn.Flatten(1)
    return None


def _step(gm: torch.fx.GraphModule, node: torch.fx.Node, prev: torch.fx.Node,
          shapes: set[torch.fx.Node]) -> nn.Module | None:
    """The module that computes ``node`` from ``prev`` alone (sharing the model's parameters), or None."""
    if node.op == "call_module":
        ok = tuple(node.args) == (prev,) and not node.kwargs
        return gm.get_submodule(str(node.target)) if ok else None
    flat = _flatten_step(node, prev, shapes)
    if flat is not None:
        return flat
    if node.op != "call_function" or not node.args or node.args[0] is not prev:
        return None
    if node.target in _POINTWISE_FUNCTIONS and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
        return _POINTWISE_FUNCTIONS[node.target]()
    if node.target is F.adaptive_avg_pool2d and len(node.args) == 2 and not node.kwargs:
        return nn.AdaptiveAvgPool2d(node.args[1])
    if node.target in _CONV_FUNCTIONS and not node.kwargs and 2 <= len(node.args) <= 7:
        defaults = (None, None, None, 1, 0, 1, 1)  # input, weight, bias, stride, padding, dilation, groups
        _, w, b, stride, padding, dilation, groups = (*node.args, *defaults[len(node.args):])
        if not (isinstance(w, torch.fx.Node) and w.op == "get_attr"):
            return None
        if b is not None and not (isinstance(b, torch.fx.Node) and b.op == "get_attr"):
            return None
        weight = gm.get_parameter(str(w.target)) if isinstance(w.target, str) else None
        if weight is None:
            return None
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride, padding,
                         dilation, groups, bias=b is not None, device="meta")
        conv.weight = weight  # shared, not copied
        if b is not None:
            conv.bias = gm.get_parameter(str(b.target))
        return conv
    return None


def as_chain(gm: torch.fx.GraphModule) -> list[nn.Module] | None:
    """The traced head as the chain of modules it runs (sharing its parameters), when it is one: every
    node takes the previous one as its only tensor input (reads of the batch size aside). None if not.
    Lets the Sequential shortcuts (SHAP-CAM's and Ablation-CAM's first-linear terms) see traced heads."""
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    prev = placeholders[0]
    shapes = {n for n in nodes if _is_shape_read(n) and n.args and n.args[0] is prev}
    shapes |= {n for n in nodes if n.op == "call_function" and n.target is operator.getitem
               and n.args[0] in shapes}
    chain: list[nn.Module] = []
    for node in nodes:
        if node.op in ("placeholder", "get_attr") or node in shapes:
            continue
        if node.op == "output":
            return chain if node.args[0] is prev else None
        step = _step(gm, node, prev, shapes)
        if step is None:
            return None
        chain.append(step)
        prev = node
    return None
