"""Perturbation-based CAMs: Score-CAM (masks the input) and Ablation-CAM (zeroes maps in the head).

Both evaluate many perturbed copies per forward pass, ``self.batch_size`` rows at a time, in the
*tile layout* of :mod:`cam_core.methods.base`: a batch holds ``R`` tiles of the ``N`` images, tile
``r`` perturbed by map ``k_r`` for all images, so row ``b`` belongs to image ``b % N`` (which keeps
conditioned models, e.g. a VQA model with its question bound, correct).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from cam_core.kernels.shapley import FirstLinearTerms, first_linear_terms
from cam_core.methods.base import BaseCAM, CAMContext, normalize_per_image, upsample


def _forward(model: nn.Module, batch: Tensor) -> Tensor:
    """``model(batch)``, fed channels-last on the CPU (oneDNN's convolutions run ~20-30% faster on it;
    same values up to float rounding). A model that cannot take a channels-last batch (e.g. it calls
    ``.view`` on a conv output) gets it contiguous instead."""
    if batch.device.type == "cpu" and batch.dim() == 4:
        try:
            return model(batch.contiguous(memory_format=torch.channels_last))
        except RuntimeError as err:
            if "view" not in str(err):
                raise
    return model(batch)


def _map_chunks(k: int, n: int, batch_size: int) -> Iterator[range]:
    """Consecutive ranges of map indices, ``max(1, batch_size // n)`` maps (tiles) per forward."""
    per = max(1, batch_size // n)
    for start in range(0, k, per):
        yield range(start, min(start + per, k))


class ScoreCAM(BaseCAM):
    r"""Score-CAM (Wang et al., CVPR-W 2020, Eq. 5 and Algorithm 1 there).

    ``alpha_k = softmax(f(x * s(u(A_k))))[c]``: the softmax probability of the target for the input
    masked by map ``k``, upsampled bilinearly to the input size (``u``) and min-max normalised to
    [0, 1] per map (``s``). This is what the authors' reference code (haofanwang/Score-CAM) does; as
    there, a constant map (no mask) gets ``alpha_k = 0``. The full model runs on ``K`` masked
    copies of every image, ``batch_size`` rows per forward.

    pytorch-grad-cam's ``ScoreCAM`` differs: it takes the raw target output (the logit) of each
    masked input and applies a softmax over the ``K`` maps, ``alpha = softmax_k(f^c(x * s(u(A_k))))``,
    so its weights sum to 1 over maps and rank maps by logit, not by class probability.
    """

    name = "Score-CAM"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        x, a = ctx.x, ctx.activations
        n, k = a.shape[:2]
        size = tuple(x.shape[-2:])
        flat = a.flatten(2)
        varies = (flat.amax(2) > flat.amin(2)).t()  # (K, N) a constant map masks nothing: alpha_k = 0
        alpha = torch.zeros(k, n, device=a.device, dtype=a.dtype)
        with torch.no_grad():
            for maps in _map_chunks(k, n, self.batch_size):
                chunk = a[:, maps.start : maps.stop].transpose(0, 1).flatten(0, 1)  # (R*N, h, w), tile layout
                masks = normalize_per_image(upsample(chunk, size))[:, None].to(x.dtype)  # (R*N, 1, H, W)
                masked = masks * x.repeat(len(maps), 1, 1, 1)  # (R*N, C, H, W)
                probs = torch.softmax(_forward(ctx.model, masked), dim=1)  # (R*N, classes)
                alpha[maps.start : maps.stop] = ctx.target_scores(probs).to(a.dtype).view(len(maps), n)
        return torch.where(varies, alpha, 0.0).t()  # (N, K)


class AblationCAM(BaseCAM):
    r"""Ablation-CAM (Desai & Ramaswamy, WACV 2020; Eq. 9 of Jung & Oh, 2021).

    ``alpha_k = (F^c(A) - F^c(A with A_k = 0)) / F^c(A)``: the relative drop of the target logit
    when map ``k`` is removed. Only the head ``F`` is evaluated (``ctx.head``), on ``batch_size``
    ablated copies of ``A`` per forward; the body runs once. When the head starts with channel-wise
    pools, a Flatten and a Linear layer (VGG, ResNet), removing map ``k`` only subtracts its term from
    that layer's pre-activation, and only the layers after it run per ablation.
    Where ``F^c(A) = 0`` the drop is left unnormalised (``F^c(A) - F^c(A with A_k = 0)``) instead of
    dividing by zero.

    pytorch-grad-cam's ``AblationCAM`` uses the same formula when the layer's minimum activation is
    0 (post-ReLU layers); for layers with negative values it sets the map to ``min(A) - 1e7``
    instead of 0. It also re-runs the whole model for every ablated map.
    """

    name = "Ablation-CAM"
    needs_head = True

    def coefficients(self, ctx: CAMContext) -> Tensor:
        head = ctx.require_head(self.name)
        a = ctx.activations  # (N, K, h, w)
        n, k = a.shape[:2]
        full = ctx.target_scores(ctx.logits)  # (N,) F^c(A)
        with torch.no_grad():
            split = first_linear_terms(head, a, ctx.target)
            if split is not None:  # full recomputed the same way, so that rounding cancels in the drop
                full, ablated = self._ablated_first_linear(ctx, split)
            else:
                ablated = torch.empty(n, k, device=a.device, dtype=full.dtype)
                for maps in _map_chunks(k, n, self.batch_size):
                    tiles = a.repeat(len(maps), 1, 1, 1)  # (R*N, K, h, w), row b is image b % N
                    rows = torch.arange(len(maps) * n, device=a.device)
                    chans = torch.tensor(list(maps), device=a.device).repeat_interleave(n)  # (R*N,)
                    tiles[rows, chans] = 0.0
                    scores = ctx.target_scores(head(tiles)).view(len(maps), n)  # (R, N)
                    ablated[:, maps.start : maps.stop] = scores.t()
        drop = full[:, None] - ablated.to(full.dtype)  # (N, K)
        denom = torch.where(full != 0, full, torch.ones_like(full))[:, None]
        return drop / denom  # (N, K)

    def _ablated_first_linear(self, ctx: CAMContext, split: FirstLinearTerms) -> tuple[Tensor, Tensor]:
        """``F^c(A)`` (N,) and ``F^c(A with A_k = 0)`` (N, K) for all k, when ``F`` is channel-wise ops ->
        Flatten -> Linear -> rest (torchvision VGG and ResNet heads): zeroing map k removes its term from
        the first layer's pre-activation, ``z_k = z - terms_k``
        (:func:`cam_core.kernels.shapley.first_linear_terms`), so only ``rest`` runs per ablation."""
        n, k = ctx.activations.shape[:2]
        terms, bias, rest = split
        if not rest:  # affine head: terms hold the target row only
            full = terms[..., 0].sum(1) + bias[:, 0]  # (N,)
            return full, full[:, None] - terms[..., 0]
        pre = terms.sum(1, keepdim=True) + bias  # (N, 1, O) z of the full A
        ablated = torch.empty(n, k, device=terms.device, dtype=terms.dtype)
        tail = nn.Sequential(*rest)
        for maps in _map_chunks(k, n, self.batch_size):
            z = (pre - terms[:, maps.start : maps.stop]).transpose(0, 1).flatten(0, 1)  # (R*N, O), tiles
            scores = ctx.target_scores(tail(z)).view(len(maps), n)  # (R, N)
            ablated[:, maps.start : maps.stop] = scores.t()
        return ctx.target_scores(tail(pre[:, 0])), ablated  # (N,), (N, K)
