"""SHAP-CAM (Jung & Oh, ICCV 2021, Eq. 6, Algorithm 1): sampled Shapley values of the maps."""

from __future__ import annotations

from torch import Tensor, nn

from cam_core.kernels import shapley
from cam_core.methods.base import BaseCAM, CAMContext


class ShapCAM(BaseCAM):
    r"""SHAP-CAM_P (Jung & Oh, 2021, Eq. 6 and Algorithm 1).

    ``alpha_k = phi_k``, the Shapley value of map ``k`` in the game
    ``v(S) = F^c(A with the maps outside S set to 0)``, estimated by averaging marginal
    contributions over ``n_orderings`` random orderings (:func:`cam_core.kernels.shapley.permutation`).
    Deterministic for a ``seed``; ``sum_k alpha_k = F^c(A) - F^c(0)`` for every ``P``. The paper
    uses ``P = 10,000`` as its stand-in for the exact values.

    Args:
        n_orderings: ``P``, the number of random orderings.
        seed: seed of the orderings (drawn on the CPU, so CPU and CUDA agree).
        batch_size: coalitions evaluated per forward pass of the head.

    Example::

        res = cc.ShapCAM(vgg16, "features.29", n_orderings=100, seed=0)(x)
    """

    name = "SHAP-CAM"
    needs_head = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module,
        *,
        n_orderings: int = 100,
        seed: int = 0,
        split: tuple[nn.Module, nn.Module] | None = None,
        batch_size: int = 1024,
    ) -> None:
        if int(n_orderings) < 1:
            raise ValueError(f"n_orderings must be >= 1, got {n_orderings}")
        super().__init__(model, target_layer, split=split, batch_size=batch_size)
        self.n_orderings = int(n_orderings)
        self.seed = int(seed)

    def coefficients(self, ctx: CAMContext) -> Tensor:
        head = ctx.require_head(self.name)
        return shapley.permutation(
            head, ctx.activations, ctx.target, self.n_orderings, seed=self.seed, batch_size=self.batch_size
        )  # (N, K)

    def __repr__(self) -> str:
        return (
            f"ShapCAM(target_layer={self.target_layer!r}, n_orderings={self.n_orderings}, seed={self.seed})"
        )
