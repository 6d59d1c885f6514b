"""Gradient-based CAMs: CAM (Zhou et al.), Grad-CAM, Grad-CAM++, XGrad-CAM."""
from __future__ import annotations

from torch import Tensor

from cam_core.methods.base import BaseCAM, CAMContext


class GradCAM(BaseCAM):
    r"""Grad-CAM (Selvaraju et al., 2017): alpha_k = mean_ij dF^c/dA_k(i,j)."""

    name = "Grad-CAM"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        return ctx.gradients.mean(dim=(2, 3))
