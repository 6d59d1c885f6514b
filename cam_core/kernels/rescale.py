r"""The DeepLIFT-Rescale kernel of LIFT-CAM (``cc.deeplift``; Shrikumar et al., 2017).

``deeplift(head, A, target)`` returns ``C(dA_k(i,j) -> dF^c)`` for every activation, shape
``(N, K, h, w)``, against a reference (all-zero by default, as in LIFT-CAM Eq. 7). The
contributions sum to ``F^c(A) - F^c(ref)`` (summation-to-delta, Eq. 8); ``return_delta=True``
also returns the per-image error of that identity.

How it works: the head runs once on the tile-stacked batch ``cat([A, ref])`` (2N rows, row
``b`` is image ``b % N``, so conditioned heads keep their context). Every non-linear leaf
module gets a forward pre-hook that clones its input (in-place ReLUs would otherwise destroy
the pre-activation) and a forward hook that returns the same output through an
``autograd.Function`` whose backward applies the module's DeepLIFT rule using both halves.
The data of each call lives in that call's autograd node, so a module called several times
(torchvision ResNet blocks reuse ``self.relu``) is handled correctly. Linear modules and
functional linear operations (residual additions, ``torch.flatten``) pass multipliers by the
chain rule. Hooks are removed and the parameters' ``requires_grad`` and ``training`` flags restored in
``finally``; the caller's model is left unchanged.

Rules are plain functions ``rule(module, inputs, outputs, grad_input, grad_output, eps)``
(Captum's signature) looked up by exact module type in :data:`RULES`; ``inputs`` and
``outputs`` are the module's 2N-row input and output, ``grad_input`` the ordinary gradient.
Add a rule with :func:`register_rule`, or pass ``rules={MyAct: rescale}`` for one call.

The rules (Rescale for every elementwise activation torchvision uses, max-pool, the product rule
for squeeze-and-excitation gating, LayerNorm) are in :mod:`cam_core.kernels.deeplift_rules`, with the
argument why each keeps summation-to-delta. A ``torch.fx.GraphModule`` head (what
:func:`cam_core.split_model` returns for traced models) is run node by node instead of with hooks
(:mod:`cam_core.kernels.deeplift_graph`), so its functional operations (``F.relu``, ``x * s``,
``F.layer_norm``, ...) get their rules too, and an unknown one is an error, not a silent linear op.

Limits: in a plain ``nn.Module`` head, non-linearities written as functions inside a module's
``forward`` (``F.relu(x)``) are invisible to hooks and would be treated as linear; write them as
modules, or trace the head (``torch.fx.symbolic_trace(head)``) and pass the GraphModule.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.fx
from torch import Tensor, nn

from cam_core.kernels.attention_rules import MODULE_RULES
from cam_core.kernels.deeplift_graph import run_graph
from cam_core.kernels.deeplift_rules import (
    LINEAR_MODULES,
    RULES,
    Rule,
    RuleFunction,
    is_linear,
    layer_norm,
    maxpool,
    product,
    register_rule,
    rescale,
)
from cam_core.model.targets import as_target
from cam_core.runtime import check_grad_mode, eval_mode

__all__ = ["deeplift", "rescale", "maxpool", "layer_norm", "product", "register_rule", "RULES",
           "LINEAR_MODULES", "Rule"]


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def deeplift(
    head: nn.Module,
    activations: Tensor,
    target: int | Tensor,
    reference: Tensor | None = None,
    return_delta: bool = False,
    *,
    rules: Mapping[type[nn.Module], Rule] | None = None,
    eps: float = 1e-10,
) -> Tensor | tuple[Tensor, Tensor]:
    """DeepLIFT-Rescale contributions of ``activations`` to ``F^c`` through ``head``.

    Args:
        head: ``F``, mapping ``(N, K, h, w)`` to ``(N, num_classes)`` logits (run in eval mode,
            training flags restored afterwards).
        activations: ``A``, ``(N, K, h, w)`` (any shape with the batch first works).
        target: class ``c`` per image, an int or ``(N,)``.
        reference: ``A`` of the reference, same shape (or broadcastable); zeros by default.
        return_delta: also return ``sum(contrib) - (F^c(A) - F^c(ref))`` per image, ``(N,)``.
        rules: extra ``{module type: rule}`` for this call, on top of :data:`RULES`.

    Returns:
        contributions ``(N, K, h, w)``, or ``(contributions, delta)``.

    Example::

        contrib = cc.deeplift(head, A, target=3)          # (N, K, h, w)
        alpha = contrib.sum(dim=(2, 3))                   # LIFT-CAM, Eq. 7
    """
    check_grad_mode("deeplift")
    if not isinstance(activations, Tensor) or activations.dim() < 2:
        raise ValueError("activations must be a tensor (N, K, h, w) with the batch first")
    a = activations.detach()
    n = a.shape[0]
    ref = torch.zeros_like(a) if reference is None else reference.detach().to(a).expand_as(a)
    t = as_target(target, n, a.device)
    table: dict[type[nn.Module], Rule] = {**RULES, **(rules or {})}
    slots: dict[nn.Module, Tensor] = {}

    def pre_hook(module: nn.Module, args: tuple) -> None:
        z = args[0] if args else None
        if not (isinstance(z, Tensor) and z.requires_grad):
            return  # does not depend on A (e.g. a question encoder): no contribution flows here
        kind = type(module)
        if kind in table:
            slots[module] = z.clone()  # before an in-place op overwrites it; part of the graph
        elif not is_linear(module):
            raise ValueError(
                f"deeplift has no rule for {kind.__module__}.{kind.__qualname__} (a leaf module of the "
                "head that A flows through). If it is linear, add it to "
                "cam_core.kernels.rescale.LINEAR_MODULES; otherwise register a rule, e.g. for an elementwise "
                "non-linearity "
                f"cam_core.kernels.rescale.register_rule({kind.__qualname__}, "
                "cam_core.kernels.rescale.rescale), "
                "or pass rules={...} to deeplift()."
            )

    def forward_hook(module: nn.Module, _args: tuple, output: Tensor) -> Tensor | None:
        z = slots.pop(module, None)
        if z is None:
            return None
        if not isinstance(output, Tensor):
            raise ValueError(
                f"deeplift: {type(module).__name__} returned {type(output).__name__}, expected a tensor"
            )
        return RuleFunction.apply(z, output.detach(), module.forward, module, table[type(module)], eps)

    def decompose(module: nn.Module, args: tuple, kwargs: dict, _output: object) -> object:
        return MODULE_RULES[type(module)](module, *args, **kwargs)  # attention, run with its rules

    handles = []
    # parameters stop requiring grad for the call (restored in finally), so that "requires grad"
    # means "depends on A" in the hooks
    trainable = [p for p in head.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        traced = isinstance(head, torch.fx.GraphModule)
        with eval_mode(head):
            for module in head.modules() if not traced else ():  # a traced head: rules per node instead
                if type(module) in MODULE_RULES:
                    handles.append(module.register_forward_hook(decompose, with_kwargs=True))
                if _is_leaf(module):
                    handles.append(module.register_forward_pre_hook(pre_hook))
                    if type(module) in table:
                        handles.append(module.register_forward_hook(forward_hook))
            with torch.enable_grad():
                a_in = a.clone().requires_grad_(True)
                stacked = torch.cat([a_in, ref])  # (2N, K, h, w), tile layout
                out = run_graph(head, stacked, table, eps) if traced else head(stacked)  # (2N, num_classes)
                if out.dim() != 2 or out.shape[0] != 2 * n:
                    raise ValueError(
                        f"head must return logits (2N, num_classes) = ({2 * n}, C) for the stacked "
                        f"batch cat([A, ref]); got shape {tuple(out.shape)}"
                    )
                if bool(((t < 0) | (t >= out.shape[1])).any()):
                    raise ValueError(f"target out of range: the head has {out.shape[1]} classes "
                                     f"(0 .. {out.shape[1] - 1}), got {t.tolist()}")
                scores = out.gather(1, t.repeat(2)[:, None]).squeeze(1)  # (2N,)
                (multipliers,) = torch.autograd.grad(scores.sum(), a_in)
    finally:
        for handle in handles:
            handle.remove()
        for p in trainable:
            p.requires_grad_(True)
        slots.clear()
    contrib = (a - ref) * multipliers  # (N, K, h, w)
    if not return_delta:
        return contrib
    scores = scores.detach()
    delta = contrib.flatten(1).sum(1) - (scores[:n] - scores[n:])  # (N,)
    return contrib, delta
