"""CAMs with a weight per pixel instead of per map: LayerCAM and HiResCAM.

Their map is ``L^c = ReLU(sum_k W_k ⊙ A_k)`` with a weight ``W_k(i,j)`` for every activation,
not Eq. 1's ``ReLU(sum_k alpha_k A_k)``; each class only says how ``W`` is computed
(:meth:`PixelwiseCAM.pixel_weights`). So that they can stand in the tables that compare
coefficients (Table 2), their ``alpha`` is the *mass-equivalent* weight
``alpha_k = sum_ij W_k(i,j) A_k(i,j) / sum_ij A_k(i,j)``: the single weight that gives map ``k``
the same total in the CAM (0 for an all-zero map).
"""
from __future__ import annotations

import torch
from torch import Tensor

from cam_core.methods.base import BaseCAM, CAMContext


class PixelwiseCAM(BaseCAM):
    """Base of the methods whose map is ``sum_k W_k ⊙ A_k`` (before the ReLU of Eq. 1)."""

    def pixel_weights(self, ctx: CAMContext) -> Tensor:  # (N, K, h, w)
        raise NotImplementedError

    def coefficients(self, ctx: CAMContext) -> Tensor:
        a = ctx.activations  # (N, K, h, w)
        mass = (self.pixel_weights(ctx) * a).sum(dim=(2, 3))  # (N, K)
        total = a.sum(dim=(2, 3))  # (N, K)
        return torch.where(total != 0, mass / torch.where(total != 0, total, torch.ones_like(total)), 0.0)

    def combine(self, ctx: CAMContext, alpha: Tensor) -> Tensor:
        return (self.pixel_weights(ctx) * ctx.activations).sum(dim=1)  # (N, h, w)


class LayerCAM(PixelwiseCAM):
    r"""LayerCAM (Jiang et al., IEEE TIP 2021, Eqs. 5-6 there).

    ``L^c = ReLU(sum_k ReLU(g_k) ⊙ A_k)``, ``g = dF^c/dA``: every activation is weighted by its own
    positive gradient. pytorch-grad-cam 1.5's ``LayerCAM`` computes the same map. ``alpha`` is the
    mass-equivalent weight (module docstring).
    """

    name = "LayerCAM"

    def pixel_weights(self, ctx: CAMContext) -> Tensor:
        return torch.relu(ctx.gradients)  # (N, K, h, w)


class HiResCAM(PixelwiseCAM):
    r"""HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM ...", Eq. 5 there).

    ``L^c = ReLU(sum_k g_k ⊙ A_k)``, ``g = dF^c/dA``: the element-wise product of gradient and
    activation, summed over maps (Grad-CAM averages the gradient over pixels first). For a head
    ``F = W GAP(A) + b`` it equals Grad-CAM. Its mass-equivalent ``alpha`` (module docstring) is
    XGrad-CAM's ``alpha``: the two methods give each map the same total and differ only in where
    it lies.
    """

    name = "HiResCAM"

    def pixel_weights(self, ctx: CAMContext) -> Tensor:
        return ctx.gradients  # (N, K, h, w)
