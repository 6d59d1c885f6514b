"""Convergence of a sampled Shapley estimator (Algorithm 1) to a reference, as chapters 01 and 02 show it.

::

    curve = convergence(lambda p, s: cc.shapley.permutation(head, A, t, n_orderings=p, seed=s),
                        reference=cc.shapley.exact(head, A, t), orderings=[1, 4, 16], seeds=range(3))
    loglog_slope(curve)                     # about -0.5: error ~ 1/sqrt(P)
    orderings_to_match(curve, lift_error)   # the first P as close as LIFT-CAM
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from cam_core.metrics.similarity import cosine_similarity, relative_error


def convergence(estimate: Callable[[int, int], torch.Tensor], reference: torch.Tensor,
                orderings: Sequence[int], seeds: Sequence[int]) -> pd.DataFrame:
    """Error of a sampled Shapley estimate against a reference, for each number of orderings and seed.

    Args:
        estimate: ``estimate(P, seed) -> (N, K)`` coefficients, e.g.
            ``lambda p, s: cc.shapley.permutation(head, A, t, n_orderings=p, seed=s)``.
        reference: (N, K), e.g. the exact Shapley values.
    Returns:
        long frame ``orderings, seed, image, rel_error, cosine`` with
        ``rel_error = |phi_P - ref| / |ref|`` and the cosine similarity to ``ref`` per image.
    """
    ref = reference.detach().double()
    rows = []
    for p in orderings:
        for s in seeds:
            est = estimate(int(p), int(s)).detach().double().to(ref.device)  # (N, K)
            if est.shape != ref.shape:
                raise ValueError(f"estimate returned {tuple(est.shape)}, the reference is {tuple(ref.shape)}")
            rel = relative_error(est, ref).cpu().numpy()
            cos = cosine_similarity(est, ref).cpu().numpy()
            rows += [(int(p), int(s), i, float(r), float(c))
                     for i, (r, c) in enumerate(zip(rel, cos, strict=True))]
    return pd.DataFrame(rows, columns=["orderings", "seed", "image", "rel_error", "cosine"])


def orderings_to_match(curve: pd.DataFrame, error: float) -> int | None:
    """The smallest number of orderings whose mean ``rel_error`` in ``curve`` (from :func:`convergence`)
    is at most ``error`` (e.g. LIFT-CAM's), or None when no P tried comes as close."""
    mean = curve.groupby("orderings")["rel_error"].mean().sort_index()
    return next((int(p) for p, e in mean.items() if e <= error), None)


def loglog_slope(curve: pd.DataFrame, x: str = "orderings", y: str = "rel_error") -> float:
    """Least-squares slope of ``log mean(y)`` against ``log x`` (about -0.5 for an error ~ 1/sqrt(P))."""
    mean = curve.groupby(x)[y].mean()
    mean = mean[mean > 0]
    if len(mean) < 2:
        return float("nan")
    return float(np.polyfit(np.log(mean.index.to_numpy(float)), np.log(mean.to_numpy(float)), 1)[0])
