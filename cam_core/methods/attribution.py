"""The supplement's CAMs (Jung & Oh, ICCV 2021, Supplementary Material): ``alpha`` from an additive
feature attribution method applied to the head ``F`` with the maps as features (the framework of
Sec. 3.2: ``g_CAM(z) = phi_0 + sum_k phi_k z_k``, Eq. 5, and ``alpha_k = phi_k``).

LRP-CAM and LIME-CAM follow the official code (Captum's ``LRP`` and ``Lime`` on ``F``); DeepSHAP-CAM and
KernelSHAP-CAM are the two SHAP approximations the paper discusses (Lundberg & Lee, 2017).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.kernels import surrogate
from cam_core.kernels.lrp import lrp
from cam_core.kernels.rescale import deeplift
from cam_core.methods.base import BaseCAM, CAMContext


class LRPCAM(BaseCAM):
    r"""LRP-CAM (Jung & Oh, 2021, Supplementary Material; LRP: Bach et al., PLoS ONE 2015).

    ``alpha_k = sum_ij R_k(i,j)``: the LRP-epsilon relevance of map ``k`` for ``F^c``, propagated from
    the logit through the head (:func:`cam_core.kernels.lrp.lrp`: epsilon rule at affine layers, identity rule
    at ReLUs; Captum's defaults, as in the official code). One forward and one backward of the head.
    ``sum_k alpha_k = F^c(A)`` minus what the biases absorb (exactly ``F^c(A)`` for a bias-free ReLU
    head as ``epsilon -> 0``); on a bias-free ReLU head LRP-CAM equals LIFT-CAM.

    Example::

        res = cc.LRPCAM(vgg16, "features.29")(x)
    """

    name = "LRP-CAM"
    needs_head = True

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, *, epsilon: float = 1e-9,
                 split: tuple[nn.Module, nn.Module] | None = None, batch_size: int = 64) -> None:
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        super().__init__(model, target_layer, split=split, batch_size=batch_size)
        self.epsilon = float(epsilon)

    def coefficients(self, ctx: CAMContext) -> Tensor:
        relevance = lrp(ctx.require_head(self.name), ctx.activations, ctx.target, self.epsilon)
        return relevance.sum(dim=(2, 3))  # (N, K)


class LIMECAM(BaseCAM):
    r"""LIME-CAM (Jung & Oh, 2021, Supplementary Material; LIME: Ribeiro et al., KDD 2016, Eq. 1).

    ``alpha = beta``, the coefficients of a weighted Lasso fitted to ``F^c(A ⊙ z)`` over ``n_samples``
    random coalitions ``z`` of maps (each kept with probability 1/2), weighted by an exponential kernel
    on the cosine distance between ``A`` and ``A ⊙ z`` (:func:`cam_core.kernels.surrogate.lime`; Captum's
    ``Lime`` defaults, which the official code uses: Lasso ``alpha = 0.01``, kernel width 1,
    ``n_samples = K``). Deterministic for a ``seed``; the coalitions are shared by the images of a batch.

    Args:
        n_samples: coalitions per image (None: ``K``, as the official code).
        alpha: the Lasso penalty (0: weighted least squares).
        kernel_width: width of the exponential kernel.
        seed: seed of the coalitions (drawn on the CPU).
        batch_size: coalitions evaluated per forward of the head.
    """

    name = "LIME-CAM"
    needs_head = True

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, *, n_samples: int | None = None,
                 alpha: float = 0.01, kernel_width: float = 1.0, seed: int = 0,
                 split: tuple[nn.Module, nn.Module] | None = None, batch_size: int = 1024) -> None:
        if n_samples is not None and int(n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 (or None for K), got {n_samples}")
        if alpha < 0 or not kernel_width > 0:
            raise ValueError(f"need alpha >= 0 and kernel_width > 0, got {alpha}, {kernel_width}")
        super().__init__(model, target_layer, split=split, batch_size=batch_size)
        self.n_samples, self.alpha, self.kernel_width, self.seed = n_samples, alpha, kernel_width, int(seed)

    def coefficients(self, ctx: CAMContext) -> Tensor:
        k = ctx.activations.shape[1]
        return surrogate.lime(ctx.require_head(self.name), ctx.activations, ctx.target,
                              self.n_samples or k, seed=self.seed, alpha=self.alpha,
                              kernel_width=self.kernel_width, batch_size=self.batch_size)  # (N, K)


class KernelSHAPCAM(BaseCAM):
    r"""KernelSHAP-CAM (Jung & Oh, 2021, Supplementary Material; KernelSHAP: Lundberg & Lee, 2017, Thm. 2).

    ``alpha = phi``, the KernelSHAP estimate of the maps' Shapley values in SHAP-CAM's game
    ``v(z) = F^c(A ⊙ z)`` (Eq. 6): a weighted least-squares fit over coalitions drawn from the Shapley
    kernel, constrained to ``sum_k alpha_k = F^c(A) - F^c(0)`` (local accuracy, Eq. 8)
    (:func:`cam_core.kernels.surrogate.kernel_shap`). When every coalition fits in ``n_samples`` (``K <= 16``)
    they are enumerated and ``alpha`` is the exact Shapley value.

    Args:
        n_samples: coalitions per image (None: ``2 K + 2048``, the ``shap`` package's default).
        seed: seed of the coalitions (drawn on the CPU).
        batch_size: coalitions evaluated per forward of the head.
    """

    name = "KernelSHAP-CAM"
    needs_head = True

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, *, n_samples: int | None = None,
                 seed: int = 0, split: tuple[nn.Module, nn.Module] | None = None,
                 batch_size: int = 1024) -> None:
        if n_samples is not None and int(n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 (or None for 2K + 2048), got {n_samples}")
        super().__init__(model, target_layer, split=split, batch_size=batch_size)
        self.n_samples, self.seed = n_samples, int(seed)

    def coefficients(self, ctx: CAMContext) -> Tensor:
        k = ctx.activations.shape[1]
        return surrogate.kernel_shap(ctx.require_head(self.name), ctx.activations, ctx.target,
                                     self.n_samples or 2 * k + 2048, seed=self.seed,
                                     batch_size=self.batch_size)  # (N, K)


class DeepSHAPCAM(BaseCAM):
    r"""DeepSHAP-CAM (Jung & Oh, 2021, Supplementary Material; DeepSHAP: Lundberg & Lee, 2017, Sec. 4.2).

    ``alpha_k = (1/B) sum_b sum_ij C(A_k(i,j) - A^b_k(i,j) -> F^c(A) - F^c(A^b))``: LIFT-CAM's DeepLIFT-
    Rescale contributions (Eq. 7), averaged over a distribution of ``B`` reference maps ``A^b`` instead
    of the single all-zero reference. Local accuracy becomes ``sum_k alpha_k = F^c(A) - mean_b F^c(A^b)``.

    Args:
        background: images ``(B, C, H, W)`` whose activation maps at ``target_layer`` are the
            references (a sample of the data, as DeepSHAP's background set). None: the single all-zero
            reference, with which DeepSHAP-CAM equals LIFT-CAM.
        batch_size: rows (images x references) per DeepLIFT pass.
    """

    name = "DeepSHAP-CAM"
    needs_head = True

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, *, background: Tensor | None = None,
                 split: tuple[nn.Module, nn.Module] | None = None, batch_size: int = 64) -> None:
        if background is not None and (not isinstance(background, Tensor) or background.dim() != 4
                                       or background.shape[0] == 0):
            raise ValueError("background must be a non-empty batch of images (B, C, H, W), or None")
        super().__init__(model, target_layer, split=split, batch_size=batch_size)
        self.background = None if background is None else background.detach().clone()
        self._references: Tensor | None = None

    def references(self, like: Tensor) -> Tensor:
        """The reference maps ``(B, K, h, w)`` on ``like``'s device (computed once per device)."""
        if self.background is None:
            return torch.zeros_like(like[:1])
        if self._references is None or self._references.device != like.device:
            body = self.split.body if self.split is not None else None
            if body is None:
                raise ValueError("DeepSHAP-CAM needs the model's body to map background images to maps")
            with torch.no_grad():
                self._references = body(self.background.to(like.device)).detach().clone()
        if self._references.shape[1:] != like.shape[1:]:
            raise ValueError(f"background images give maps of shape {tuple(self._references.shape[1:])}, "
                             f"the explained images {tuple(like.shape[1:])}: use images of the same size")
        return self._references.to(like.dtype)

    def coefficients(self, ctx: CAMContext) -> Tensor:
        head = ctx.require_head(self.name)
        a = ctx.activations  # (N, K, h, w)
        n = a.shape[0]
        refs = self.references(a)  # (B, K, h, w)
        per = max(1, self.batch_size // n)  # references per DeepLIFT pass
        total = torch.zeros(a.shape[:2], dtype=torch.float64, device=a.device)
        for start in range(0, refs.shape[0], per):
            r = refs[start : start + per]  # (R, K, h, w)
            tiles = a.repeat(r.shape[0], 1, 1, 1)  # (R*N, ...), row b is image b % N
            ref = r.repeat_interleave(n, dim=0)  # (R*N, ...), tile r holds reference r
            contrib = deeplift(head, tiles, ctx.target.repeat(r.shape[0]), reference=ref)
            total += contrib.sum(dim=(2, 3)).view(r.shape[0], n, -1).sum(0).double()
        return (total / refs.shape[0]).to(a.dtype)  # (N, K)
