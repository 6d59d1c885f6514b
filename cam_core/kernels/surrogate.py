r"""Linear surrogates of the map-removal game: KernelSHAP and LIME over activation maps.

The game is SHAP-CAM's (Jung & Oh, 2021, Eq. 6): players are the ``K`` maps, a coalition
``z in {0, 1}^K`` keeps the maps with ``z_k = 1`` and zeroes the others, ``v(z) = F^c(A ⊙ z)``.
Both estimators evaluate ``v`` on sampled coalitions and fit ``v(z) ~ phi_0 + z . phi`` by weighted
least squares; they differ in the sampling, the weights and the fit:

- :func:`kernel_shap` (Lundberg & Lee, 2017, Theorem 2): the Shapley kernel, the constraints
  ``phi_0 = v(0)``, ``sum phi = v(1) - v(0)``; with the budget for every coalition it enumerates them
  and returns the exact Shapley values;
- :func:`lime` (Ribeiro et al., 2016, Eq. 1): uniform coalitions, an exponential kernel on the cosine
  distance between ``A`` and ``A ⊙ z``, and a weighted Lasso (Captum's ``Lime`` defaults).

Coalitions are drawn on the CPU from a seed and shared by every image of a batch, so results do not
depend on the batch or the device. ``v`` is evaluated ``batch_size`` rows per forward of the head;
heads of channel-wise pools -> Flatten -> Linear -> rest (VGG, ResNet) only run ``rest`` per coalition
(:func:`cam_core.kernels.shapley.first_linear_terms`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cam_core.kernels.shapley import first_linear_terms
from cam_core.model.targets import as_target
from cam_core.runtime import eval_mode

__all__ = ["coalition_values", "kernel_shap", "lime", "lime_coalitions", "MAX_ENUMERATED_MAPS"]

#: kernel_shap enumerates all 2^K - 2 coalitions when the budget allows and K is at most this
MAX_ENUMERATED_MAPS = 16


@torch.no_grad()
def coalition_values(head: nn.Module, activations: Tensor, target: int | Tensor, masks: Tensor,
                     batch_size: int = 1024) -> Tensor:
    """``v(z) = F^c(A ⊙ z)`` for each row of ``masks`` ``(M, K)``: returns ``(M, N)``."""
    a = activations.detach()
    n, k = a.shape[:2]
    t = as_target(target, n, a.device)
    per = max(1, batch_size // n)  # coalitions per forward
    out = [a.new_empty(0, n)]
    with eval_mode(head):
        fast = first_linear_terms(head, a.clone(), t)  # clone: the head's first modules may work in place
        for start in range(0, masks.shape[0], per):
            z = masks[start : start + per].to(a)  # (R, K)
            if fast is not None:
                terms, bias, rest = fast
                pre = torch.einsum("rk,nko->rno", z, terms) + bias  # (R, N, O) first layer, tile layout
                if not rest:
                    out.append(pre[..., 0])
                    continue
                logits = nn.Sequential(*rest)(pre.flatten(0, 1))  # (R*N, classes)
            else:
                logits = head((a[None] * z[:, None, :, None, None]).flatten(0, 1))  # (R*N, classes)
            out.append(logits.gather(1, t.repeat(z.shape[0])[:, None]).view(z.shape[0], n))
    return torch.cat(out)  # (M, N)


def _kernel_coalitions(k: int, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Coalitions ``(M, K)`` of sizes 1 .. K-1 and their regression weights ``(M,)``, in float64.

    All ``2^K - 2`` with the Shapley kernel weight ``(K-1) / (C(K,s) s (K-s))`` when ``n_samples``
    covers them; else ``n_samples`` drawn from that kernel (size ``s`` with probability
    ``∝ (K-1) / (s (K-s))``, then a uniform subset), in complementary pairs, each weighing 1."""
    if k <= MAX_ENUMERATED_MAPS and n_samples >= 2**k - 2:
        codes = torch.arange(1, 2**k - 1)
        z = ((codes[:, None] >> torch.arange(k)) & 1).double()  # (2^K - 2, K)
        s = z.sum(1)
        comb = torch.tensor([math.comb(k, int(i)) for i in s], dtype=torch.float64)
        return z, (k - 1) / (comb * s * (k - s))
    gen = torch.Generator().manual_seed(int(seed))
    sizes = torch.arange(1, k, dtype=torch.float64)
    p = (k - 1) / (sizes * (k - sizes))
    half = (n_samples + 1) // 2
    s = torch.multinomial(p / p.sum(), half, replacement=True, generator=gen) + 1  # (half,)
    order = torch.argsort(torch.rand(half, k, generator=gen, dtype=torch.float64), dim=1)
    z = (order < s[:, None]).double()  # a uniform subset of size s per row
    z = torch.cat([z, 1 - z])[:n_samples]  # complementary pairs (antithetic sampling)
    return z, torch.ones(z.shape[0], dtype=torch.float64)


def kernel_shap(head: nn.Module, activations: Tensor, target: int | Tensor, n_samples: int,
                seed: int = 0, batch_size: int = 1024) -> Tensor:
    r"""KernelSHAP (Lundberg & Lee, 2017) of the maps: ``phi`` ``(N, K)`` with ``sum phi = v(1) - v(0)``.

    Solves ``min sum_i w_i (v(z_i) - v(0) - z_i . phi)^2`` subject to ``sum phi = v(1) - v(0)`` (the
    constraint is eliminated by substituting ``phi_K``) through its normal equations, in float64
    (a singular system, too few distinct coalitions, falls back to the minimum-norm solution). Exact
    Shapley values when all ``2^K - 2`` coalitions fit in ``n_samples`` (``K <= 16``).
    """
    a = activations.detach()
    n, k = a.shape[:2]
    if k < 2:
        raise ValueError(f"KernelSHAP needs at least 2 maps, got K = {k}")
    z, w = _kernel_coalitions(k, int(n_samples), seed)
    ends = torch.stack([torch.zeros(k), torch.ones(k)]).double()
    v = coalition_values(head, a, target, torch.cat([ends, z]).to(a.device), batch_size).double()  # (2+M, N)
    delta, y = v[1] - v[0], v[2:] - v[0]  # (N,), (M, N)
    z, w = z.to(a.device), w.to(a.device)
    x = z[:, :-1] - z[:, -1:]  # (M, K-1): phi_K = delta - sum of the others
    y = y - z[:, -1:] * delta  # (M, N)
    xw = x.t() * w  # (K-1, M)
    gram, rhs = xw @ x, xw @ y  # normal equations, (K-1, K-1) and (K-1, N): the Gram is shared by the batch
    sol = torch.linalg.solve_ex(gram, rhs)
    phi = sol.result if int(sol.info) == 0 else torch.linalg.pinv(gram) @ rhs  # (K-1, N)
    phi = torch.cat([phi, delta[None] - phi.sum(0, keepdim=True)])  # (K, N)
    return phi.t().to(a.dtype)


def lime(head: nn.Module, activations: Tensor, target: int | Tensor, n_samples: int, seed: int = 0,
         alpha: float = 0.01, kernel_width: float = 1.0, batch_size: int = 1024,
         max_iter: int = 2000, tol: float = 1e-7) -> Tensor:
    r"""LIME (Ribeiro et al., 2016) of the maps with Captum's defaults: coefficients ``(N, K)``.

    ``n_samples`` coalitions with each map kept with probability 1/2; weights
    ``pi(z) = exp(-d(z)^2 / (2 kernel_width^2))`` with ``d`` the cosine distance between ``A`` and
    ``A ⊙ z`` (flattened; ``1 - sqrt(sum_k z_k |A_k|^2 / sum_k |A_k|^2)``); the fit is scikit-learn's
    weighted Lasso with intercept, ``min 1/(2 sum pi) sum pi (y - b - z . beta)^2 + alpha |beta|_1``,
    solved per image by FISTA in float64 until no coefficient moves by more than ``tol`` (relative)
    or ``max_iter`` steps (``alpha = 0``: weighted least squares, minimum norm). With ``n_samples <= K``
    the Lasso may have several minimisers, and FISTA and scikit-learn's coordinate descent may stop
    at different ones.
    """
    a = activations.detach()
    k = a.shape[1]
    z = lime_coalitions(int(n_samples), k, seed).to(a.device)  # (M, K)
    y = coalition_values(head, a, target, z, batch_size).double().t()  # (N, M)
    energy = a.double().flatten(2).pow(2).sum(2)  # (N, K) |A_k|^2
    total = energy.sum(1, keepdim=True)
    cos = torch.where(total > 0, (energy @ z.t() / torch.where(total > 0, total, 1.0)).sqrt(), 0.0)  # (N, M)
    w = torch.exp(-((1 - cos) ** 2) / (2 * kernel_width**2))  # (N, M)
    w = w / w.sum(1, keepdim=True)
    xm = w @ z  # (N, K) weighted means
    ym = (w * y).sum(1)  # (N,)
    xc = z[None] - xm[:, None]  # (N, M, K)
    yc = y - ym[:, None]  # (N, M)
    gram = torch.einsum("nm,nmk,nmj->nkj", w, xc, xc)  # (N, K, K)
    corr = torch.einsum("nm,nmk,nm->nk", w, xc, yc)  # (N, K)
    if alpha == 0:
        beta = (torch.linalg.pinv(gram) @ corr[..., None])[..., 0]
    else:
        beta = _lasso(gram, corr, float(alpha), max_iter, tol)
    return beta.to(a.dtype)  # (N, K)


def lime_coalitions(n_samples: int, k: int, seed: int) -> Tensor:
    """LIME's coalitions: ``(M, K)`` float64 0/1 on the CPU, each map kept with probability 1/2."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.bernoulli(torch.full((n_samples, k), 0.5, dtype=torch.float64), generator=gen)


def _largest_eigenvalue(gram: Tensor, iters: int = 100) -> Tensor:
    """An upper estimate of the largest eigenvalue of each PSD ``(K, K)`` matrix: power iteration plus
    5 % (an exact ``eigvalsh`` costs seconds at K = 2048 on a CPU)."""
    v = torch.ones(gram.shape[:-1], dtype=gram.dtype, device=gram.device)  # (N, K)
    for _ in range(iters):
        v = (gram @ v[..., None])[..., 0]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return 1.05 * (v * (gram @ v[..., None])[..., 0]).sum(-1)


def _lasso(gram: Tensor, corr: Tensor, alpha: float, max_iter: int, tol: float) -> Tensor:
    """``argmin 1/2 b^T G b - c^T b + alpha |b|_1`` per row, by FISTA (Beck & Teboulle, 2009) with
    gradient restarts (O'Donoghue & Candes, 2015: momentum is reset where it points uphill)."""
    lip = _largest_eigenvalue(gram).clamp_min(1e-12)[:, None]  # (N, 1) Lipschitz constants
    beta = torch.zeros_like(corr)
    mom, step = beta.clone(), torch.ones_like(lip)
    for it in range(max_iter):
        grad = (gram @ mom[..., None])[..., 0] - corr
        u = mom - grad / lip
        new = torch.sign(u) * torch.clamp(u.abs() - alpha / lip, min=0.0)
        uphill = ((mom - new) * (new - beta)).sum(1, keepdim=True) > 0  # (N, 1)
        nxt = torch.where(uphill, 1.0, (1 + torch.sqrt(1 + 4 * step * step)) / 2)
        mom = torch.where(uphill, new, new + (step - 1) / nxt * (new - beta))
        if it % 25 == 24:  # test convergence every 25 steps (each test syncs the device)
            if float((new - beta).abs().max()) <= tol * max(1.0, float(new.abs().max())):
                return new
        beta, step = new, nxt
    return beta
