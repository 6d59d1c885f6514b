"""Shapley values of activation maps: exact enumeration, Algorithm 1 (sampling), the linear closed form."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cam_core.kernels import shapley
from cam_core.kernels.rescale import deeplift


def vgg_style_head(k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(1),
        nn.Sequential(nn.Linear(4 * k, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(),
                      nn.Linear(16, 5)),
    )  # fmt: skip


def linear_head(k: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(k, 5))


def score(head: nn.Module, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return head.eval()(a).gather(1, t[:, None])[:, 0]


def hand_head() -> nn.Sequential:
    """F = ReLU(A1 + A2 - 1)."""
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(-1.0)
    return nn.Sequential(nn.Flatten(1), lin, nn.ReLU())


def test_exact_hand_worked() -> None:
    # A = (2, 1): v({}) = 0, v({1}) = 1, v({2}) = 0, v({1,2}) = 2
    # phi_1 = (1 - 0)/2 + (2 - 0)/2 = 1.5, phi_2 = (0 - 0)/2 + (2 - 1)/2 = 0.5
    a = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    assert torch.allclose(shapley.exact(hand_head(), a, 0), torch.tensor([[1.5, 0.5]]))
    # Algorithm 1 with 2 maps: each ordering gives (1, 1) or (2, 0); the mean is exact when both occur
    est = shapley.permutation(hand_head(), a, 0, n_orderings=200, seed=0)
    assert torch.allclose(est.sum(), torch.tensor(2.0))
    assert abs(est[0, 0].item() - 1.5) < 0.15


def test_exact_efficiency_and_limit() -> None:
    torch.manual_seed(0)
    head = vgg_style_head(8).double()
    a = torch.rand(2, 8, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 3])
    phi = shapley.exact(head, a, t)
    assert torch.allclose(phi.sum(1), score(head, a, t) - score(head, torch.zeros_like(a), t), atol=1e-12)
    with pytest.raises(ValueError, match="2\\^K"):
        shapley.exact(head, torch.rand(1, 13, 2, 2), 0)


def test_linear_head_lift_equals_exact_equals_closed_form_equals_sampling() -> None:
    torch.manual_seed(1)
    k = 10
    head = linear_head(k).double()
    a = torch.rand(2, k, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 4])
    ex = shapley.exact(head, a, t)
    assert torch.allclose(shapley.linear_closed_form(head, a, t), ex, atol=1e-12)
    assert torch.allclose(deeplift(head, a, t).sum(dim=(2, 3)), ex, atol=1e-12)
    for fast in (True, False):  # for an additive game every ordering gives the exact values
        assert torch.allclose(shapley.permutation(head, a, t, 3, seed=5, fast=fast), ex, atol=1e-12)


def test_sampling_error_decreases_as_one_over_sqrt_p() -> None:
    torch.manual_seed(2)
    k = 8
    head = vgg_style_head(k).double().eval()
    a = torch.rand(2, k, 4, 4, dtype=torch.float64)
    t = torch.tensor([2, 0])
    ex = shapley.exact(head, a, t)
    ps = [8, 32, 128, 512]
    errors = []
    for p in ps:
        est = [shapley.permutation(head, a, t, p, seed=s) for s in range(6)]
        rmse = [(e - ex).pow(2).mean().sqrt().item() for e in est]
        errors.append(sum(rmse) / len(rmse))
    x = torch.tensor([math.log(p) for p in ps], dtype=torch.float64)
    y = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert -0.7 < slope.item() < -0.3, (slope.item(), errors)
    assert errors[-1] < 0.2 * errors[0]


@pytest.mark.parametrize("make_head", [vgg_style_head, linear_head])
def test_fast_path_equals_generic_path(make_head) -> None:
    torch.manual_seed(3)
    k = 7
    head = make_head(k).double()
    a = torch.rand(3, k, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 4])
    assert shapley._fast_split(head, k) is not None
    fast = shapley.permutation(head, a, t, 9, seed=11, fast=True, batch_size=20)
    generic = shapley.permutation(head, a, t, 9, seed=11, fast=False, batch_size=7)
    assert torch.allclose(fast, generic, atol=1e-12)


def test_fast_path_only_where_maps_commute_with_the_stem() -> None:
    k = 4
    conv_first = nn.Sequential(nn.Conv2d(k, k, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(k, 3))
    bn_first = nn.Sequential(nn.BatchNorm2d(k), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(k, 3))
    sigmoid_first = nn.Sequential(nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(k, 3))
    # a 1x1 conv first is a first linear layer (issue 21): zeroing map k removes its term W[:, k] A_k
    assert shapley._fast_split(conv_first, k) is not None
    a = torch.rand(2, k, 3, 3, dtype=torch.float64)
    fast = shapley.permutation(conv_first.double(), a, 1, 6, seed=0, fast=True)
    assert torch.allclose(fast, shapley.exact(conv_first, a, 1), atol=1e-12)  # affine head: exact
    for head in (bn_first, sigmoid_first):
        assert shapley._fast_split(head, k) is None
        with pytest.raises(ValueError, match="fast=True"):
            shapley.permutation(head, torch.rand(1, k, 2, 2), 0, 2, fast=True)
    # the generic fallback still gives Shapley values (bias of BN: zeroed maps are not zero after it)
    a = torch.rand(2, k, 3, 3, dtype=torch.float64)
    head = bn_first.double().eval()
    head[0].running_mean.fill_(0.3)
    ex = shapley.exact(head, a, 1)
    assert torch.allclose(shapley.permutation(head, a, 1, 5, seed=0), ex, atol=1e-12)  # still additive


def test_seed_batch_and_efficiency() -> None:
    torch.manual_seed(4)
    k = 6
    head = vgg_style_head(k).double()
    a = torch.rand(3, k, 4, 4, dtype=torch.float64)
    t = torch.tensor([3, 3, 1])
    first = shapley.permutation(head, a, t, 5, seed=7)
    assert torch.equal(first, shapley.permutation(head, a, t, 5, seed=7))
    assert not torch.allclose(first, shapley.permutation(head, a, t, 5, seed=8))
    per_image = torch.cat([shapley.permutation(head, a[i, None], t[i, None], 5, seed=7) for i in range(3)])
    assert torch.allclose(first, per_image, atol=1e-12)
    # every ordering's credits sum to F(A) - F(0), so the estimate does for any P
    expected = score(head, a, t) - score(head, torch.zeros_like(a), t)
    assert torch.allclose(first.sum(1), expected, atol=1e-12)
    # chunking does not change the orderings
    assert torch.allclose(first, shapley.permutation(head, a, t, 5, seed=7, batch_size=3), atol=1e-12)


def test_orderings_are_permutations_and_reproducible() -> None:
    perms = shapley.orderings(50, 9, seed=3)
    assert perms.shape == (50, 9)
    assert torch.equal(perms.sort(dim=1).values, torch.arange(9).expand(50, 9))
    assert torch.equal(perms, shapley.orderings(50, 9, seed=3))
    assert torch.equal(perms[:20], shapley.orderings(20, 9, seed=3))


def test_bad_arguments() -> None:
    head = linear_head(3)
    with pytest.raises(ValueError, match="n_orderings"):
        shapley.permutation(head, torch.rand(1, 3, 2, 2), 0, 0)
    with pytest.raises(ValueError, match="N, K, h, w"):
        shapley.exact(head, torch.rand(3, 2, 2), 0)
