"""The one place a ``target`` (the class c explained, Eq. 1) is turned into a ``(N,)`` long tensor."""
from __future__ import annotations

import torch
from torch import Tensor


def as_target(target: int | Tensor, n: int, device: torch.device | str,
              num_classes: int | None = None) -> Tensor:
    """``target`` (an int, or ints of shape ``(n,)``) as a fresh ``(n,)`` long tensor on ``device``.

    Raises ``ValueError`` for a float or bool target (3.9 is not truncated to 3), another shape,
    and, when ``num_classes`` is given, for a class id
    outside ``0 .. num_classes - 1``.
    """
    raw = target if isinstance(target, Tensor) else torch.as_tensor(target)
    if raw.dtype == torch.bool or raw.is_floating_point() or raw.is_complex():
        raise ValueError(f"target must be an integer class index (or an integer tensor of them), got "
                         f"{target!r} ({raw.dtype}); it is not rounded or truncated for you")
    t = torch.as_tensor(target, device=device).long()
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target must be an int or a tensor of shape ({n},) (one class per image); "
                         f"got shape {tuple(t.shape)}")
    if num_classes is not None and bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"target out of range: the model has {num_classes} classes "
                         f"(0 .. {num_classes - 1}), got {t.tolist()}")
    return t.clone()
