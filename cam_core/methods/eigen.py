"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the first principal component of the maps."""
from __future__ import annotations

import torch
from torch import Tensor

from cam_core.methods.base import BaseCAM, CAMContext


class EigenCAM(BaseCAM):
    r"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, Eq. 5 there), as pytorch-grad-cam 1.5 computes it.

    With ``M`` the ``(hw, K)`` matrix of the maps (one row per pixel), centred per map
    (``M_c = M - mean over pixels``), and ``v`` its first right singular vector:
    ``L = ReLU(M_c v)``, i.e. ``ReLU(sum_k v_k (A_k - mean(A_k)))``. The target class plays no
    role (no gradient, no head). ``alpha = v`` (the map also carries the constant
    ``-sum_k v_k mean(A_k)``).

    The sign of a singular vector is arbitrary (pytorch-grad-cam keeps whatever numpy's LAPACK
    returns); we fix it so that ``sum_k v_k >= 0``, i.e. the map grows where the maps are large,
    which makes the result the same on every device.
    """

    name = "EigenCAM"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        m = self._centred(ctx.activations).flatten(2).transpose(1, 2)  # (N, hw, K)
        _, _, vh = torch.linalg.svd(m.double(), full_matrices=False)  # vh: (N, min(hw, K), K)
        v = vh[:, 0]  # (N, K)
        sign = torch.where(v.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(v)
        return (v * sign).to(ctx.activations.dtype)  # (N, K)

    def combine(self, ctx: CAMContext, alpha: Tensor) -> Tensor:
        return torch.einsum("nk,nkhw->nhw", alpha, self._centred(ctx.activations))  # (N, h, w)

    @staticmethod
    def _centred(a: Tensor) -> Tensor:
        a = torch.nan_to_num(a, nan=0.0)  # as pytorch-grad-cam: NaN activations count as 0
        return a - a.mean(dim=(2, 3), keepdim=True)  # (N, K, h, w)
