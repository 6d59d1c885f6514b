r"""DeepLIFT through a ``torch.fx.GraphModule`` head (the traced heads of :mod:`cam_core.model.graph_split`).

A traced head holds functional operations as well as modules: ``F.relu(x, inplace=True)``
(DenseNet), ``operator.add`` (residuals), ``operator.mul`` (squeeze-and-excitation ``x * s(x)``,
layer scale), ``torch.cat``, ``F.layer_norm`` (ConvNeXt's LayerNorm2d), pools, flatten, view ...
Hooks cannot see functions, so the head is run node by node (a ``torch.fx.Interpreter``) and every
node whose tensor inputs depend on A (they require grad: the kernel switches the parameters' off)
is classified:

- a module: its rule from the kernel's table (:data:`cam_core.kernels.deeplift_rules.RULES`), or it is in
  :data:`~cam_core.kernels.deeplift_rules.LINEAR_MODULES`, or an error names it;
- an elementwise non-linear function (:data:`ELEMENTWISE`): the Rescale rule, computed out of place;
- ``F.max_pool*d`` / ``F.layer_norm``: the module rules, read from the call's arguments;
- attention (``nn.MultiheadAttention``, ``matmul``, ``softmax``, ...):
  :mod:`cam_core.kernels.attention_rules`;
- a product of two A-dependent tensors: :func:`~cam_core.kernels.deeplift_rules.product`; a product with,
  or a division by, something that does not depend on A is linear;
- a linear function (:data:`LINEAR_FUNCTIONS`, :data:`LINEAR_METHODS`): run as is (chain rule);
- anything else: ``ValueError`` naming the operation and how to declare it.

Nodes whose inputs do not depend on A run unchanged.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from cam_core.kernels.attention_rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES
from cam_core.kernels.deeplift_rules import (
    Rule,
    RuleFunction,
    is_linear,
    layer_norm,
    maxpool,
    product,
    rescale,
)

__all__ = ["run_graph", "ELEMENTWISE", "LINEAR_FUNCTIONS", "LINEAR_METHODS"]

#: elementwise non-linear functions (and their in-place forms): the Rescale rule
ELEMENTWISE: dict[Callable, Callable] = {
    F.relu: F.relu, torch.relu: torch.relu, torch.relu_: torch.relu, F.relu_: F.relu, F.relu6: F.relu6,
    F.hardtanh: F.hardtanh, F.elu: F.elu, F.selu: F.selu, F.celu: F.celu, F.leaky_relu: F.leaky_relu,
    F.gelu: F.gelu, F.silu: F.silu, F.mish: F.mish, F.hardswish: F.hardswish, F.hardsigmoid: F.hardsigmoid,
    F.sigmoid: torch.sigmoid, torch.sigmoid: torch.sigmoid, F.tanh: torch.tanh, torch.tanh: torch.tanh,
    F.softplus: F.softplus,
}  # fmt: skip
#: the same as tensor methods (``x.relu()``)
ELEMENTWISE_METHODS: dict[str, Callable] = {
    "relu": torch.relu, "relu_": torch.relu, "sigmoid": torch.sigmoid, "sigmoid_": torch.sigmoid,
    "tanh": torch.tanh, "tanh_": torch.tanh,
}  # fmt: skip

#: functions affine in their A-dependent tensor arguments (the others are constants)
LINEAR_FUNCTIONS: set[Callable] = {
    getattr, operator.add, operator.iadd, operator.sub, operator.isub, operator.neg, operator.pos,
    operator.getitem,
    torch.add, torch.sub, torch.neg, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape,
    torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.mean, torch.sum, torch.chunk,
    torch.split, torch.narrow, torch.flip, torch.roll, torch.swapaxes, torch.swapdims, torch.movedim,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.linear, F.conv1d, F.conv2d, F.conv3d, F.pad, F.interpolate, F.pixel_shuffle,
    F.pixel_unshuffle, F.channel_shuffle,
}  # fmt: skip
#: affine only when their ``training`` argument is False (as in a head traced in eval mode)
EVAL_IDENTITIES: dict[Callable, int] = {  # function -> position of ``training``
    F.dropout: 2, F.dropout1d: 2, F.dropout2d: 2, F.dropout3d: 2, F.alpha_dropout: 2,
    F.batch_norm: 5, stochastic_depth: 3,
}  # fmt: skip
#: tensor methods affine in the tensor (arguments are shapes, dims, or constants)
LINEAR_METHODS: set[str] = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose", "contiguous", "mean",
    "sum", "chunk", "split", "squeeze", "unsqueeze", "expand", "expand_as", "size", "dim", "clone",
    "add", "add_", "sub", "sub_", "neg", "narrow", "select", "flip", "roll", "repeat", "to", "type_as",
    "float", "double", "__getitem__", "unflatten", "movedim",
}  # fmt: skip
_PRODUCTS = {operator.mul, operator.imul, torch.mul}
_DIVISIONS = {operator.truediv, operator.itruediv, torch.div}


def _depends(args: Any) -> bool:
    found = []
    torch.fx.node.map_aggregate(args, lambda a: found.append(isinstance(a, Tensor) and a.requires_grad))
    return any(found)


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


class _Pool:
    """The attributes :func:`~cam_core.kernels.deeplift_rules.maxpool` reads, from an ``F.max_poolNd``
    call."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.kernel_size = _arg(args, kwargs, 1, "kernel_size", None)
        self.stride = _arg(args, kwargs, 2, "stride", None) or self.kernel_size
        self.padding = _arg(args, kwargs, 3, "padding", 0)
        self.dilation = _arg(args, kwargs, 4, "dilation", 1)
        self.ceil_mode = _arg(args, kwargs, 5, "ceil_mode", False)


class _Norm:
    """The attributes :func:`~cam_core.kernels.deeplift_rules.layer_norm` reads, from an ``F.layer_norm``
    call."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.normalized_shape = tuple(_arg(args, kwargs, 1, "normalized_shape", None))
        self.weight = _arg(args, kwargs, 2, "weight", None)
        self.bias = _arg(args, kwargs, 3, "bias", None)
        self.eps = _arg(args, kwargs, 4, "eps", 1e-5)


class _DeepLiftInterpreter(torch.fx.Interpreter):
    def __init__(self, module: torch.fx.GraphModule, table: Mapping[type[nn.Module], Rule], eps: float):
        super().__init__(module)
        self.table, self.eps = table, eps

    def _rule(self, z: Tensor, fn: Callable[[Tensor], Tensor], settings: Any, rule: Rule) -> Tensor:
        y = fn(z.clone())
        return RuleFunction.apply(z, y.detach(), fn, settings, rule, self.eps)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if not _depends((args, kwargs)):
            return module(*args, **kwargs)
        kind = type(module)
        if kind in MODULE_RULES:  # attention: run as functions with rules (cam_core.kernels.attention_rules)
            return MODULE_RULES[kind](module, *args, **kwargs)
        if kind in self.table:
            return self._rule(args[0], module.forward, module, self.table[kind])
        if is_linear(module):
            return module(*args, **kwargs)
        raise ValueError(
            f"deeplift has no rule for {kind.__module__}.{kind.__qualname__} ({target!r} in the traced "
            "head). "
            "If it is linear, add it to cam_core.kernels.rescale.LINEAR_MODULES; otherwise register a rule, "
            f"e.g. cam_core.kernels.rescale.register_rule({kind.__qualname__}, "
            "cam_core.kernels.rescale.rescale) for an "
            "elementwise non-linearity, or pass rules={...} to deeplift()."
        )

    def call_function(self, target: Callable, args: tuple, kwargs: dict) -> Any:
        if not _depends((args, kwargs)):
            return target(*args, **kwargs)
        rest = {k: v for k, v in kwargs.items() if k != "inplace"}
        if target in FUNCTION_RULES:  # matmul, softmax, attention (cam_core.kernels.attention_rules)
            return FUNCTION_RULES[target](*args, **kwargs)
        if target in ELEMENTWISE:
            fn, extra = ELEMENTWISE[target], args[1:]
            if target in (F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.mish, F.elu, F.selu, F.celu,
                          F.leaky_relu, F.hardtanh) and len(extra) and isinstance(extra[-1], bool):
                extra = extra[:-1]  # a positional ``inplace``

            def elementwise(z: Tensor) -> Tensor:
                return fn(z, *extra, **rest)

            return self._rule(args[0], elementwise, None, rescale)
        if target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
            if _arg(args, kwargs, 6, "return_indices", False):
                raise ValueError("deeplift: max_pool with return_indices=True in the head is not supported")
            settings = _Pool(args, kwargs)

            def pool(z: Tensor) -> Tensor:
                return target(z, settings.kernel_size, settings.stride, settings.padding, settings.dilation,
                              settings.ceil_mode)

            return self._rule(args[0], pool, settings, maxpool)
        if target is F.layer_norm:
            norm = _Norm(args, kwargs)
            if _depends((norm.weight, norm.bias)):
                raise ValueError("deeplift: F.layer_norm with a weight or bias that depends on A")

            def layer(z: Tensor) -> Tensor:
                return F.layer_norm(z, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

            return self._rule(args[0], layer, norm, layer_norm)
        if target in _PRODUCTS:
            a, b = args[0], args[1]
            if all(isinstance(t, Tensor) and t.requires_grad for t in (a, b)):
                return product(a, b)
            return operator.mul(a, b)  # one factor is a constant: linear
        if target in _DIVISIONS and not _depends(args[1:]) and not _depends(kwargs):
            return target(*args, **kwargs)  # divided by a constant: linear
        if target in EVAL_IDENTITIES:
            if _arg(args, kwargs, EVAL_IDENTITIES[target], "training", True) is False:
                return target(*args, **kwargs)
            raise ValueError(f"deeplift: {target.__name__} in training mode in the head; trace it in "
                             "eval mode")
        if target in LINEAR_FUNCTIONS:
            return target(*args, **kwargs)
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
        raise ValueError(
            f"deeplift has no rule for the function {name} in the traced head. If it is affine in its "
            "tensor arguments, add it to cam_core.kernels.deeplift_graph.LINEAR_FUNCTIONS; if it is an "
            "elementwise non-linearity, add it to cam_core.kernels.deeplift_graph.ELEMENTWISE."
        )

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if not _depends((args, kwargs)):
            return getattr(args[0], target)(*args[1:], **kwargs)
        if target in METHOD_RULES:
            return METHOD_RULES[target](*args, **kwargs)
        if target in ELEMENTWISE_METHODS:
            fn = ELEMENTWISE_METHODS[target]
            return self._rule(args[0], fn, None, rescale)
        if target in ("mul", "mul_") and isinstance(args[1], Tensor) and args[1].requires_grad \
                and args[0].requires_grad:
            return product(args[0], args[1])
        if target in ("mul", "mul_", "div", "div_") and not _depends((args[1:], kwargs)):
            return getattr(args[0], target.rstrip("_"))(*args[1:], **kwargs)
        if target in LINEAR_METHODS:
            return getattr(args[0], target)(*args[1:], **kwargs)
        raise ValueError(
            f"deeplift has no rule for the tensor method .{target}() in the traced head. If it is "
            "affine, add its name to cam_core.kernels.deeplift_graph.LINEAR_METHODS."
        )


def run_graph(
    head: torch.fx.GraphModule, x: Tensor, table: Mapping[type[nn.Module], Rule], eps: float
) -> Tensor:
    """Run a traced head on the tile-stacked ``x = cat([A, ref])`` with every node's DeepLIFT rule."""
    return _DeepLiftInterpreter(head, table, eps).run(x)
