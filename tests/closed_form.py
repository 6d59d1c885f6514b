"""Models whose scores are known in closed form, shared by the metric tests (test_metrics, test_fills)."""
from __future__ import annotations

import torch
from torch import nn


class MeanLinear(nn.Module):
    """logits = [a * mean(x), 0]: the softmax score of class 0 is sigmoid(a * mean(x)) in closed form."""

    def __init__(self, a: float = 3.0):
        super().__init__()
        self.a = a

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([self.a * m, torch.zeros_like(m)], dim=1)
