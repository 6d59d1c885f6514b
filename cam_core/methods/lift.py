"""LIFT-CAM (Jung & Oh, ICCV 2021, Eq. 7): DeepLIFT-Rescale contributions of each map, summed."""

from __future__ import annotations

from torch import Tensor

from cam_core.kernels.rescale import deeplift
from cam_core.methods.base import BaseCAM, CAMContext


class LiftCAM(BaseCAM):
    r"""LIFT-CAM (Jung & Oh, 2021, Eq. 7).

    ``alpha_k = sum_ij C(dA_k(i,j) -> dF^c)``: DeepLIFT-Rescale contributions of map ``k``
    through the head ``F``, against the all-zero reference. One forward and one backward of
    the head. Local accuracy (Eq. 8): ``sum_k alpha_k = F^c(A) - F^c(0)``; for a linear head
    the ``alpha_k`` are the exact Shapley values of the map-removal game.

    Example::

        res = cc.LiftCAM(vgg16, target_layer="features.29")(x)   # res.alpha: (N, 512)
    """

    name = "LIFT-CAM"
    needs_head = True

    def coefficients(self, ctx: CAMContext) -> Tensor:
        head = ctx.require_head(self.name)
        contrib = deeplift(head, ctx.activations, ctx.target)  # (N, K, h, w)
        return contrib.sum(dim=(2, 3))  # (N, K)
