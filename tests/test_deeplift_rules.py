"""DeepLIFT rules for modern layers (issue 13 item 2): Rescale for each activation, the product rule of
squeeze-and-excitation gating, LayerNorm, and functional ops of traced (torch.fx) heads."""
from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import LayerNorm2d

import cam_core as cc
from cam_core.kernels.deeplift_rules import product

ACTIVATIONS = [nn.SiLU(), nn.Hardswish(), nn.Hardsigmoid(), nn.GELU(), nn.GELU(approximate="tanh"),
               nn.ReLU6(), nn.Sigmoid(), nn.Tanh(), nn.ELU(), nn.LeakyReLU(0.1), nn.Mish(), nn.SELU(),
               nn.Softplus()]


def _rel_delta(head: nn.Module, a: torch.Tensor, target: int, ref: torch.Tensor | None = None) -> float:
    contrib, delta = cc.deeplift(head, a, target, reference=ref, return_delta=True)
    with torch.no_grad():
        f = head(a.clone())[:, target]
        f0 = head(torch.zeros_like(a) if ref is None else ref.clone())[:, target]
    return float((delta.abs() / (f - f0).abs()).max())


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda m: repr(m))
def test_rescale_for_each_activation_hand_worked(act: nn.Module) -> None:
    # F = w . g(A) for one map: the contribution of A_j is w_j (g(A_j) - g(0)) exactly
    head = nn.Sequential(act, nn.Flatten(1), nn.Linear(4, 1, bias=False))
    a = torch.tensor([-2.0, -0.3, 0.5, 3.0]).view(1, 4, 1, 1)
    contrib, delta = cc.deeplift(head, a, 0, return_delta=True)
    w = head[2].weight.detach()[0]
    expected = w * (act(a.flatten()) - act(torch.zeros(4)))
    torch.testing.assert_close(contrib.flatten(), expected, rtol=1e-5, atol=1e-6)
    assert abs(delta.item()) < 1e-5
    # the same function written functionally in a traced head gives the same contributions
    traced = torch.fx.symbolic_trace(head)
    torch.testing.assert_close(cc.deeplift(traced, a, 0), contrib)


class Gate(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W relu(V mean(x)))``, then GAP + Linear."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.out = nn.Conv2d(k, 3, 1), nn.Conv2d(3, k, 1), nn.Linear(k, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.out(torch.flatten(x * s, 1).view(x.shape[0], x.shape[1], -1).mean(-1))


def test_product_rule_hand_worked() -> None:
    # F = a1 * a2 with A = (2, 3), reference (1, 1): Shapley split of 6 - 1 = 5:
    # a1 gets (2 - 1) * (3 + 1) / 2 = 2, a2 gets (3 - 1) * (2 + 1) / 2 = 3
    head = torch.fx.symbolic_trace(lambda a: (a[:, 0:1] * a[:, 1:2]).flatten(1))
    a = torch.tensor([2.0, 3.0]).view(1, 2, 1, 1)
    contrib, delta = cc.deeplift(head, a, 0, reference=torch.ones_like(a), return_delta=True)
    assert contrib.flatten().tolist() == [2.0, 3.0] and delta.item() == 0.0
    with pytest.raises(ValueError, match="tile-stacked"):
        product(torch.ones(3, 2), torch.ones(3, 2))


def test_squeeze_excitation_gating_keeps_summation_to_delta() -> None:
    head = torch.fx.symbolic_trace(Gate())
    a = torch.randn(3, 6, 4, 4)
    assert _rel_delta(head, a, 2) < 1e-5
    assert _rel_delta(head, a, 1, ref=torch.randn(3, 6, 4, 4)) < 1e-5
    # the plain (untraced) module would treat x * s as linear in x: summation-to-delta breaks
    _, delta = cc.deeplift(Gate(), a, 2, return_delta=True)
    assert delta.abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["module", "layernorm2d"])
def test_layer_norm_rule(norm: str) -> None:
    torch.manual_seed(0)
    k = 16
    ln = nn.LayerNorm(k) if norm == "module" else LayerNorm2d(k)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    if norm == "module":  # (N, K, h, w) -> channels last -> LayerNorm -> GAP
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), ln, nn.ReLU(), nn.Linear(k, 5))
    else:  # ConvNeXt's classifier: LayerNorm2d on (N, K, 1, 1) maps, traced (F.layer_norm + permutes)
        head = torch.fx.symbolic_trace(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), ln, nn.Flatten(1), nn.Linear(k, 5)))
    a = torch.randn(4, k, 3, 3).abs()
    # the reference A = 0 makes 1/sqrt(var + eps) ~ 1e3, so the product rule's two terms cancel at that
    # scale; the error stays at float32 rounding, inside the documented 1e-4
    assert _rel_delta(head, a, 3) < 1e-4
    ref = torch.randn(4, k, 3, 3).abs()  # (not a multiple of A: LayerNorm would map both to the same)
    assert _rel_delta(head, a, 3, ref=ref) < 1e-4
    # the rule itself is exact: in float64 only float64 rounding is left
    assert _rel_delta(head.double(), a.double(), 3) < 1e-10


def test_traced_torchvision_blocks_keep_summation_to_delta() -> None:
    """Heads cut mid-network contain SE blocks, stochastic depth, Hardswish, channel shuffles, pools."""
    import torchvision

    cases = [("mobilenet_v3_small", "features.9"), ("shufflenet_v2_x0_5", "stage3")]
    for arch, layer in cases:
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, num_classes=10).eval()
        body, head = cc.split_model(model, layer)
        assert isinstance(head, torch.fx.GraphModule)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            a = body(x)
            assert torch.equal(head(a), model(x))
        # float64: the rules are exact, so only rounding is left (in float32 the deep heads' |F(A) - F(0)| of
        # random weights is ~1e-6 and rounding alone reaches 3e-4 of it)
        assert _rel_delta(head.double(), a.double(), 3) < 1e-9, arch


@pytest.mark.slow
def test_traced_se_and_stochastic_depth_blocks() -> None:
    import torchvision

    cases = [("regnet_y_400mf", "trunk_output.block3"), ("efficientnet_b0", "features.6"),
             ("convnext_tiny", "features.6"), ("inception_v3", "Mixed_6e"), ("googlenet", "inception4e")]
    for arch, layer in cases:
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, num_classes=10, **(
            {"init_weights": False} if arch in ("inception_v3", "googlenet") else {})).eval()
        body, head = cc.split_model(model, layer)
        with torch.no_grad():
            a = body(torch.randn(1, 3, 139, 139))
        assert _rel_delta(head.double(), a.double(), 3) < 1e-9, arch


def test_unknown_function_in_a_traced_head_is_an_error() -> None:
    head = torch.fx.symbolic_trace(lambda a: torch.exp(a).flatten(1))
    with pytest.raises(ValueError, match=r"no rule for the function .*exp.*LINEAR_FUNCTIONS"):
        cc.deeplift(head, torch.randn(2, 3, 1, 1), 0)
    head = torch.fx.symbolic_trace(lambda a: a.exp().flatten(1))
    with pytest.raises(ValueError, match=r"tensor method \.exp\(\)"):
        cc.deeplift(head, torch.randn(2, 3, 1, 1), 0)
