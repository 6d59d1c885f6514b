"""Gradient-based CAMs: CAM (Zhou et al.), Grad-CAM, Grad-CAM++, XGrad-CAM.

Each class only says how ``alpha`` (N, K) is computed (Eq. 1 of Jung & Oh, 2021:
``L^c = ReLU(sum_k alpha_k A_k)``); hooks, the ReLU, upsampling and normalisation are
:class:`~cam_core.methods.base.BaseCAM`'s. ``g = dF^c/dA`` is ``ctx.gradients``, (N, K, h, w).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cam_core.methods.base import BaseCAM, CAMContext
from cam_core.model.layers import sequential_leaves

# modules that may sit between the global pool and the linear layer of a CAM head
_PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)


def _is_global_avg_pool(module: nn.Module) -> bool:
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return size in (1, (1, 1))
    return False


def gap_linear_weight(head: nn.Module) -> Tensor:
    """The ``(num_classes, K)`` weight of a head ``global-average-pool -> [flatten/dropout] -> Linear``.

    Raises ``ValueError`` for any other head: CAM (Zhou et al.) is only defined for that architecture.
    """
    leaves = [m for m in sequential_leaves(head) if not isinstance(m, _PASS_THROUGH)]
    if len(leaves) == 2 and _is_global_avg_pool(leaves[0]) and isinstance(leaves[1], nn.Linear):
        return leaves[1].weight
    found = " -> ".join(type(m).__name__ for m in sequential_leaves(head)) or "(empty)"
    raise ValueError(
        f"CAM (Zhou et al.) needs a head made of a global average pool followed by one Linear layer "
        f"(e.g. torchvision ResNet at target_layer='layer4'); this head is {found}. Use Grad-CAM, which "
        "equals CAM up to a positive factor on such heads and works on any head."
    )


class CAM(BaseCAM):
    r"""CAM (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

    For a head ``F(A) = W GAP(A) + b`` (global average pool, then one linear layer),
    ``alpha_k = W[c, k]``, the weight of map ``k`` for class ``c``. Since
    ``dF^c/dA_k(i,j) = W[c, k] / (h w)`` there, CAM equals Grad-CAM times ``h w``.
    Any other head raises ``ValueError``.

    Example::

        res = cc.CAM(torchvision.models.resnet50(), "layer4")(x)
    """

    name = "CAM"
    needs_head = True

    def coefficients(self, ctx: CAMContext) -> Tensor:
        weight = gap_linear_weight(ctx.require_head(self.name))  # (num_classes, K)
        return weight.detach()[ctx.target].to(ctx.activations.dtype)  # (N, K)


class GradCAM(BaseCAM):
    r"""Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1 there).

    ``alpha_k = (1 / hw) sum_ij dF^c/dA_k(i,j)``: the spatial mean of the gradient of the target
    logit with respect to map ``k``.
    """

    name = "Grad-CAM"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        return ctx.gradients.mean(dim=(2, 3))  # (N, K)


class GradCAMPlusPlus(BaseCAM):
    r"""Grad-CAM++ (Chattopadhay et al., WACV 2018, Eqs. 10 and 19 there).

    ``alpha_k = sum_ij a_k(i,j) ReLU(g_k(i,j))`` with the pixel weights
    ``a_k(i,j) = g^2 / (2 g^2 + sum_ab A_k(a,b) g^3)``, ``g = dF^c/dA_k(i,j)``.
    The closed form uses the exponential-score trick of the paper (Eq. 19: with ``Y = exp(S)``
    the second and third derivatives are powers of the first one), as pytorch-grad-cam does.
    Where ``g = 0`` the weight is 0; we compute ``a = 1 / (2 + g sum A)`` (the same value,
    without pytorch-grad-cam's ``+1e-6`` in the denominator, which biases ``a`` when ``|g|``
    is below ~1e-3); a vanishing denominator gives 0, not NaN.
    """

    name = "Grad-CAM++"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        g = ctx.gradients  # (N, K, h, w)
        sum_a = ctx.activations.sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        denom = 2.0 + sum_a * g  # (N, K, h, w) = (2 g^2 + sum A g^3) / g^2
        ok = (g != 0) & (denom.abs() > 1e-12)
        a = torch.where(ok, 1.0 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g))
        return (a * torch.relu(g)).sum(dim=(2, 3))  # (N, K)


class XGradCAM(BaseCAM):
    r"""XGrad-CAM (Fu et al., BMVC 2020, Eq. 13 there).

    ``alpha_k = sum_ij (A_k(i,j) / sum_ab A_k(a,b)) dF^c/dA_k(i,j)``. An all-zero map gets
    ``alpha_k = 0`` (pytorch-grad-cam adds 1e-7 to the denominator instead).
    """

    name = "XGrad-CAM"

    def coefficients(self, ctx: CAMContext) -> Tensor:
        a = ctx.activations  # (N, K, h, w)
        sum_a = a.sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        safe = torch.where(sum_a != 0, sum_a, torch.ones_like(sum_a))
        return (a / safe * ctx.gradients).sum(dim=(2, 3))  # (N, K)


class ShapleyCAM(BaseCAM):
    r"""ShapleyCAM (Cai et al., 2025, arXiv:2501.06261, Eq. 10 there), as pytorch-grad-cam 1.5 computes it.

    ``alpha_k = (1 / hw) sum_ij (g - H A / 2)_k(i,j)`` with ``g = dF^c/dA`` and ``H A`` the
    Hessian-vector product of ``F^c`` at ``A`` with ``A``: the second-order Taylor estimate of each
    map's Shapley value, spread over its pixels. On a head that is piecewise linear in ``A`` (ReLU,
    max-pool, linear: VGG, ResNet) ``H = 0`` and ShapleyCAM equals Grad-CAM. The score is the target
    logit (pytorch-grad-cam's default target; the paper also proposes a softmax-based score).
    Needs the head (second derivatives are taken through ``F`` only).
    """

    name = "ShapleyCAM"
    needs_head = True

    def coefficients(self, ctx: CAMContext) -> Tensor:
        head = ctx.require_head(self.name)
        a = ctx.activations
        with torch.enable_grad():
            a_in = a.clone().requires_grad_(True)
            out = head(a_in.clone())  # clone: the head may start with an in-place op
            score = out.gather(1, ctx.target[:, None]).sum()
            (g,) = torch.autograd.grad(score, a_in, create_graph=True)
            hvp = None
            if g.requires_grad:  # else g does not depend on A (H = 0)
                (hvp,) = torch.autograd.grad(g, a_in, grad_outputs=a, allow_unused=True)
        hvp = torch.zeros_like(a) if hvp is None else hvp.detach()
        return (g.detach() - 0.5 * hvp).mean(dim=(2, 3))  # (N, K)
