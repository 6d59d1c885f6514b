r"""Comparing coefficient vectors: cosine similarity (Table 2) and the local-accuracy error (Eq. 8)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.runtime import eval_mode


def cosine_similarity(alpha: Tensor, reference: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Table 2, per image: ``<alpha, ref> / (|alpha| |ref|)`` of (N, K) coefficient vectors -> (N,).

    A zero vector has similarity 0 with anything (no direction to agree with).
    """
    if alpha.shape != reference.shape or alpha.dim() != 2:
        raise ValueError(f"alpha and reference must both be (N, K); got {tuple(alpha.shape)} and "
                         f"{tuple(reference.shape)}")
    a, r = alpha.double(), reference.double()
    num = (a * r).sum(dim=1)
    den = a.norm(dim=1) * r.norm(dim=1)
    return torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num)).to(alpha.dtype)


def relative_error(alpha: Tensor, reference: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Per image ``|alpha - ref| / |ref|`` of (N, K) coefficient vectors -> (N,), in float64
    (the distance of an estimate, e.g. SHAP-CAM with P orderings or LIFT-CAM, to reference values)."""
    if alpha.shape != reference.shape or alpha.dim() != 2:
        raise ValueError(f"alpha and reference must both be (N, K); got {tuple(alpha.shape)} and "
                         f"{tuple(reference.shape)}")
    a, r = alpha.double(), reference.double().to(alpha.device)
    return (a - r).norm(dim=1) / r.norm(dim=1).clamp_min(eps)


def head_delta(head: nn.Module, activations: Tensor, target: Tensor) -> Tensor:
    r"""``F^c(A) - F^c(0)`` per image (N,): what the coefficients must sum to under local accuracy (Eq. 8).

    One tiled pass of the head on ``[A, 0]`` (2N rows, row ``b`` is image ``b % N``), so a head with a
    bound per-image context (VQA) works too.
    """
    n = activations.shape[0]
    with torch.no_grad(), eval_mode(head):
        logits = head(torch.cat([activations, torch.zeros_like(activations)]))  # (2N, classes)
    f = logits.gather(1, target.repeat(2)[:, None]).squeeze(1)
    return f[:n] - f[n:]


def local_accuracy_error(alpha: Tensor, head: nn.Module, activations: Tensor, target: Tensor) -> Tensor:
    r"""Eq. 8, per image: ``|sum_k alpha_k - (F^c(A) - F^c(0))|`` (N,).

    Zero (to float tolerance) for LIFT-CAM and exact Shapley values; for other methods it measures
    how far their coefficients are from being a complete additive explanation of the logit.
    ``head`` is ``F`` (``cc.split_model(model, layer).head``), ``activations`` ``A`` (N, K, h, w).
    """
    if alpha.shape != activations.shape[:2]:
        raise ValueError(f"alpha {tuple(alpha.shape)} must be (N, K) for activations "
                         f"{tuple(activations.shape)}")
    return (alpha.sum(dim=1).to(activations.dtype) - head_delta(head, activations, target)).abs()
