r"""Token maps: a transformer layer's output seen as CAM's activation maps (issue 24).

A vision transformer's layers output token sequences ``(N, T, C)`` (ViT: a class token, then the
``h * w`` patch tokens in raster order) or channels-last maps ``(N, H, W, C)`` (Swin's stages). CAM
wants ``A`` as ``(N, K, h, w)``: :class:`TokenGrid` says how to view one as the other, ``K = C``:

- ``to_map``: drop the ``prefix`` tokens (class / register tokens, the first ``P`` of the sequence),
  lay the patch tokens out on the ``(h, w)`` grid, channels first: ``(N, C, h, w)``;
- ``context``: the dropped prefix tokens ``(N, P, C)``; they are held at their actual values by the
  head (they are not maps: like a VQA model's question, they are the image's context);
- ``to_output``: the exact inverse, ``to_output(to_map(t), context(t)) == t`` bit for bit.

:func:`bind_head` puts the inverse view in front of a head (``A -> logits``), bound to a batch's
context, so that ``bind_head(head, grid, ctx)(grid.to_map(t)) == head(t)`` bit for bit; a traced head
(``torch.fx.GraphModule``) stays a traced head, so DeepLIFT still runs it node by node. The base class
of the CAM methods does this for every method (``tokens=`` argument); :func:`token_split` does it for
one batch by hand
(:mod:`cam_core.model.token_split`).

The grid is inferred: the model's ``patch_size`` (torchvision ViT) with the image size gives ``(h, w)``;
otherwise the smallest prefix ``P`` that leaves ``T - P`` tokens on a grid of the image's aspect
ratio. A 4-D output is channels-last when only its middle two dims have the image's aspect ratio
(Swin's ``(N, 7, 7, 768)``); ``(N, C, h, w)`` maps pass unchanged. Give it yourself with
``tokens=(14, 14)`` or ``cc.TokenGrid(size=(14, 14), prefix=1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.fx
from torch import Tensor, nn

__all__ = ["TokenGrid", "as_token_grid", "bind_head", "last_token_layer", "TokenSpec"]

#: how many leading non-grid tokens :meth:`TokenGrid.resolve` tries (class + registers)
MAX_PREFIX = 16
LAYOUTS = ("auto", "tokens", "nhwc", "nchw")


@dataclass(frozen=True)
class TokenGrid:
    """How a layer's output is viewed as maps ``(N, C, h, w)``.

    Args:
        size: the patch grid ``(h, w)``; None: inferred from the model and the image.
        prefix: leading tokens that are not on the grid (1 for a class token); None: ``T - h * w``.
        layout: ``"tokens"`` ``(N, T, C)``, ``"nhwc"`` channels-last maps, ``"nchw"`` maps already,
            or ``"auto"`` (from the output's shape).
    """

    size: tuple[int, int] | None = None
    prefix: int | None = None
    layout: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"TokenGrid layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.size is not None and (len(self.size) != 2 or min(int(s) for s in self.size) < 1):
            raise ValueError(f"TokenGrid size must be two positive ints (h, w), got {self.size!r}")
        if self.prefix is not None and int(self.prefix) < 0:
            raise ValueError(f"TokenGrid prefix must be >= 0, got {self.prefix!r}")

    # ---- resolving the unknowns from one output -------------------------------------------
    def resolve(self, out: Tensor, image_size: tuple[int, int], model: nn.Module | None = None,
                layer: str = "the target layer") -> TokenGrid:
        """This grid with ``size``, ``prefix`` and ``layout`` filled in for ``out`` (the layer's output
        on images of ``image_size``); a clear error when ``out`` cannot be viewed as maps."""
        shape = tuple(out.shape)
        layout = self.layout if self.layout != "auto" else _layout(shape, image_size)
        if layout == "nchw":
            if len(shape) != 4:
                raise ValueError(f"{layout!r} maps must be 4-D (N, C, h, w); {layer} gives {shape}")
            return replace(self, layout="nchw", size=(shape[2], shape[3]), prefix=0)
        if layout == "nhwc":
            if len(shape) != 4:
                raise ValueError(f"channels-last maps must be 4-D (N, H, W, C); {layer} gives {shape}")
            if self.size is not None and tuple(self.size) != shape[1:3]:
                raise ValueError(f"tokens={self.size} does not match {layer}'s channels-last output {shape}")
            return replace(self, layout="nhwc", size=(shape[1], shape[2]), prefix=0)
        if len(shape) != 3:
            raise ValueError(f"{layer} gives {shape}: not a token sequence (N, T, C) nor maps (N, K, h, w); "
                             "choose a layer whose output is one of them")
        t = shape[1]
        size = (self.size or _grid_from_model(model, image_size, t)
                or _grid_from_count(t, image_size, self.prefix))
        if size is None:
            raise ValueError(
                f"cannot infer the token grid of {layer}'s output {shape} on {image_size[0]}x{image_size[1]} "
                "images; pass tokens=(h, w) (the patch grid) or cc.TokenGrid(size=(h, w), prefix=P) with "
                "P the class / register tokens before the patches")
        h, w = int(size[0]), int(size[1])
        prefix = t - h * w if self.prefix is None else int(self.prefix)
        if prefix < 0 or prefix + h * w > t:
            raise ValueError(f"a {h}x{w} grid with {prefix} prefix tokens does not fit {layer}'s {t} tokens "
                             f"(output {shape}); pass tokens=(h, w) / cc.TokenGrid(size=..., prefix=...) "
                             "that fit")
        return TokenGrid(size=(h, w), prefix=prefix, layout="tokens")

    # ---- the two views (a resolved grid) ----------------------------------------------------
    def to_map(self, out: Tensor) -> Tensor:
        """``(N, T, C)`` or ``(N, H, W, C)`` -> ``(N, C, h, w)``."""
        if self.layout == "nchw":
            return out
        if self.layout == "nhwc":
            return out.permute(0, 3, 1, 2)  # (N, C, h, w)
        h, w = self.size  # type: ignore[misc]
        patches = out[:, self.prefix : self.prefix + h * w]  # (N, h*w, C)
        return patches.transpose(1, 2).unflatten(2, (h, w))  # (N, C, h, w)

    def context(self, out: Tensor) -> Tensor | None:
        """The tokens that are not maps, ``(N, P, C)`` before the grid and any after it; None if none."""
        if self.layout != "tokens":
            return None
        h, w = self.size  # type: ignore[misc]
        if self.prefix == 0 and out.shape[1] == h * w:
            return None
        return torch.cat([out[:, : self.prefix], out[:, self.prefix + h * w :]], dim=1)

    def to_output(self, a: Tensor, context: Tensor | None = None) -> Tensor:
        """The inverse of :meth:`to_map` (contiguous, as the layer's own output): ``(N, C, h, w)`` -> the
        layer's layout, with ``context`` (tiled to ``a``'s batch, row ``b`` is image ``b % n``) put back."""
        if self.layout == "nchw":
            return a
        if self.layout == "nhwc":
            return a.permute(0, 2, 3, 1).contiguous()
        patches = a.flatten(2).transpose(1, 2)  # (N', h*w, C)
        if context is None:
            return patches.contiguous()
        reps = a.shape[0] // context.shape[0]
        ctx = context.repeat(reps, 1, 1)
        return torch.cat([ctx[:, : self.prefix], patches, ctx[:, self.prefix :]], dim=1)

    @property
    def is_view(self) -> bool:
        """Whether the layer's output is not already ``(N, C, h, w)`` maps."""
        return self.layout != "nchw"


#: what the methods' ``tokens=`` argument accepts
TokenSpec = TokenGrid | tuple[int, int] | bool | None


def as_token_grid(tokens: TokenSpec) -> TokenGrid | None:
    """``tokens=`` of the CAM methods as a grid: None -> inferred, ``(h, w)`` -> that grid, ``False`` ->
    no view (the layer's output must be maps), a :class:`TokenGrid` as is."""
    if tokens is None or tokens is True:
        return TokenGrid()
    if tokens is False:
        return None
    if isinstance(tokens, TokenGrid):
        return tokens
    if isinstance(tokens, (tuple, list)) and len(tokens) == 2 and all(isinstance(s, int) for s in tokens):
        return TokenGrid(size=(int(tokens[0]), int(tokens[1])))
    raise ValueError(f"tokens must be None (inferred), (h, w), cc.TokenGrid(...) or False; got {tokens!r}")


def _aspect(a: int, b: int, image_size: tuple[int, int]) -> bool:
    return a * image_size[1] == b * image_size[0]


def _layout(shape: tuple[int, ...], image_size: tuple[int, int]) -> str:
    if len(shape) == 3:
        return "tokens"
    if (len(shape) == 4 and not _aspect(shape[2], shape[3], image_size)
            and _aspect(shape[1], shape[2], image_size)):
        return "nhwc"
    return "nchw"


def _grid_from_model(model: nn.Module | None, image_size: tuple[int, int], t: int) -> tuple[int, int] | None:
    patch = getattr(model, "patch_size", None)
    if isinstance(patch, (tuple, list)):
        ph, pw = int(patch[0]), int(patch[-1])
    elif isinstance(patch, int):
        ph = pw = patch
    else:
        return None
    h, w = image_size[0] // ph, image_size[1] // pw
    return (h, w) if 0 < h * w <= t else None


def _grid_from_count(t: int, image_size: tuple[int, int], prefix: int | None) -> tuple[int, int] | None:
    """The grid of the image's aspect ratio holding ``T - P`` tokens, for the smallest such ``P``."""
    for p in [prefix] if prefix is not None else range(min(MAX_PREFIX, t - 1) + 1):
        n = t - p
        h = math.isqrt(n * image_size[0] // image_size[1]) if n * image_size[0] % image_size[1] == 0 else 0
        if h > 0 and n % h == 0 and h * (n // h) == n and _aspect(h, n // h, image_size):
            return h, n // h
    return None


# ---- the head in front of which the inverse view is put ------------------------------------
class _TokenHead(nn.Module):
    """``A -> head(grid.to_output(A, context))`` for a head that is not traced."""

    def __init__(self, head: nn.Module, grid: TokenGrid, context: Tensor | None) -> None:
        super().__init__()
        self.head, self.grid = head, grid
        self.register_buffer("token_context", context, persistent=False)

    def forward(self, a: Tensor) -> Tensor:
        n = self.token_context.shape[0] if self.token_context is not None else a.shape[0]
        if a.shape[0] % n:
            raise ValueError(f"a head bound to {n} images' class tokens got a batch of {a.shape[0]} maps; "
                             "feed it batches of R * N rows, row b belonging to image b % N")
        return self.head(self.grid.to_output(a, self.token_context))


class _TracedView(_TokenHead):
    """The inverse view as a graph to trace (no batch check: it is not traceable)."""

    def __init__(self, grid: TokenGrid, context: Tensor | None) -> None:
        super().__init__(nn.Identity(), grid, context)

    def forward(self, a: Tensor) -> Tensor:
        return self.head(self.grid.to_output(a, self.token_context))


def bind_head(head: nn.Module, grid: TokenGrid, context: Tensor | None) -> nn.Module:
    """``head`` (token sequence -> logits) as a head of maps ``(N, C, h, w)``, bound to a batch's
    ``context`` tokens (tiled over batches of ``R * N`` rows). A ``GraphModule`` head gives a
    ``GraphModule`` (its graph with the inverse view's nodes in front)."""
    if not grid.is_view:
        return head
    if not isinstance(head, torch.fx.GraphModule):
        return _TokenHead(head, grid, context)
    graph = torch.fx.Tracer().trace(_TracedView(grid, context))  # the inverse view as nodes
    (out,) = [n for n in graph.nodes if n.op == "output"]
    (call,) = [n for n in graph.nodes if n.op == "call_module" and n.target == "head"]
    tokens = call.args[0]
    graph.erase_node(out)
    graph.erase_node(call)
    placeholder = next(n for n in head.graph.nodes if n.op == "placeholder")
    env = {placeholder: tokens}
    for node in head.graph.nodes:
        if node.op != "placeholder":
            env[node] = graph.node_copy(node, env.__getitem__)
    root = nn.Module()
    for name, child in head.named_children():
        root.add_module(name, child)
    for name, value in [*head.named_parameters(recurse=False), *head.named_buffers(recurse=False)]:
        setattr(root, name, value)
    root.register_buffer("token_context", context, persistent=False)
    bound = torch.fx.GraphModule(root, graph, class_name=type(head).__name__ + "Tokens")
    bound.token_grid = grid
    return bound


# ---- choosing a transformer's layer -------------------------------------------------------------
def last_token_layer(model: nn.Module, x: Tensor, after: str | None = None) -> str | None:
    """The last block (a child of an ``nn.Sequential`` / ``nn.ModuleList``) whose output is a token
    sequence ``(N, T, C)`` with patch tokens that still reach the output (ViT's
    ``encoder.layers.encoder_layer_10``: the last block's patch tokens are not read by the class
    token), if it finishes after the layer ``after``; else None."""
    names = {m: name for name, m in model.named_modules() if name}
    blocks = {c for m in model.modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
              for c in m.children()}
    order: list[str] = []
    outputs: dict[str, Tensor] = {}

    leaf_inputs: list[Tensor] = []

    def hook(module: nn.Module, inp: tuple, out: object) -> None:
        order.append(names[module])
        if module in blocks and isinstance(out, Tensor) and out.dim() == 3 and out.requires_grad:
            outputs[names[module]] = out
        leaf = next(module.children(), None) is None
        if leaf and inp and isinstance(inp[0], Tensor) and inp[0].requires_grad:
            leaf_inputs.append(inp[0])

    handles = [m.register_forward_hook(hook) for m in names]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
            found = [n for n in order if n in outputs]
            if not found:
                return None
            # what reaches the last leaf (the classifier's input: torchvision's ViT head starts at zero,
            # so the logits' gradient is 0), in a fixed random direction (a LayerNorm's sum is constant)
            last = leaf_inputs[-1] if leaf_inputs else logits
            weights = torch.randn(last.shape, generator=torch.Generator().manual_seed(0)).to(last)
            grads = torch.autograd.grad((last * weights).sum(), [outputs[n] for n in found],
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    image = tuple(x.shape[-2:])
    for name, g in reversed(list(zip(found, grads, strict=True))):
        if after is not None and order.index(name) < order.index(after):
            return None
        try:
            grid = TokenGrid().resolve(outputs[name], image, model, name)
        except ValueError:
            continue
        if g is not None and bool(grid.to_map(g).ne(0).any()):
            return name
    return None
