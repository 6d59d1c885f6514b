"""``cc.token_split``: the body/head split of :func:`cam_core.model.split.split_model` at a token layer, as
maps (:mod:`cam_core.model.tokens`), for one batch: ``head(body(x)) == model(x)`` bit for bit."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.model.split import split_model
from cam_core.model.tokens import TokenGrid, TokenSpec, as_token_grid, bind_head

__all__ = ["token_split"]


def token_split(model: nn.Module, target_layer: str | nn.Module, x: Tensor,
                tokens: TokenSpec = None) -> tuple[nn.Module, nn.Module]:
    """``(body, head)`` of ``model`` at a token layer, as maps: ``body(x)`` is ``(N, C, h, w)`` and
    ``head(body(x)) == model(x)`` bit for bit, the head bound to ``x``'s class / register tokens."""
    body, head = split_model(model, target_layer)
    grid = as_token_grid(tokens)
    with torch.no_grad():
        out = body(x)
    grid = (grid or TokenGrid(layout="nchw")).resolve(out, tuple(x.shape[-2:]), model, repr(target_layer))
    return _TokenBody(body, grid), bind_head(head, grid, grid.context(out))


class _TokenBody(nn.Module):
    def __init__(self, body: nn.Module, grid: TokenGrid) -> None:
        super().__init__()
        self.body, self.grid = body, grid

    def forward(self, x: Tensor) -> Tensor:
        return self.grid.to_map(self.body(x))
