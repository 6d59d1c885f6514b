"""DeepLIFT through attention (issue 24 item 2): the bilinear Shapley rule of ``Q K^T`` and
``attention @ V``, softmax, ``nn.MultiheadAttention``, against exact Shapley values and summation to delta
(float64: exact to rounding, <= 1e-10 relative)."""
from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

import cam_core as cc
from cam_core.kernels.attention_rules import multi_head_attention
from cam_core.model.token_split import token_split

torch.set_default_dtype(torch.float32)


def _tokens(a: Tensor) -> Tensor:
    return a.flatten(2).transpose(1, 2)  # (N, K, h, w) -> (N, h*w, K)


class Bilinear(nn.Module):
    """``F = w . flatten(Q K^T)``, ``Q = T W_q``, ``K = T W_k``: bilinear in the maps."""

    def __init__(self, k: int, d: int = 3, classes: int = 2, tokens: int = 4) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(k, d, bias=False), nn.Linear(k, d, bias=False)
        self.out = nn.Linear(tokens * tokens, classes)

    def forward(self, a: Tensor) -> Tensor:
        t = _tokens(a)
        return self.out(torch.matmul(self.q(t), self.k(t).transpose(1, 2)).flatten(1))


class AttentionHead(nn.Module):
    """Self-attention with a residual, LayerNorm, GELU MLP and a class readout: a ViT block in small."""

    def __init__(self, k: int, classes: int = 3, heads: int = 1, functional: bool = False) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(k)
        self.attn = nn.MultiheadAttention(k, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(k, 2 * k), nn.GELU(), nn.Linear(2 * k, k))
        self.out = nn.Linear(k, classes)
        self.functional = functional

    def forward(self, a: Tensor) -> Tensor:
        t = _tokens(a)
        y = self.ln(t)
        if self.functional:  # the same attention written as F.softmax(q @ k^T) @ v
            q, k, v = F.linear(y, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
            w = F.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
            y = self.attn.out_proj(w @ v)
        else:
            y = self.attn(y, y, y, need_weights=False)[0]
        t = t + y
        t = t + self.mlp(t)
        return self.out(t.mean(1))


def _seeded(module: nn.Module, seed: int = 0, std: float = 0.7) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=std)
    return module.double().eval()


def test_bilinear_rule_is_the_exact_shapley_value_of_each_map() -> None:
    # a game bilinear in the players: phi_k = (a_k B + b_k A) / 2, what the Shapley split of a @ b gives
    head = torch.fx.symbolic_trace(_seeded(Bilinear(k=6)))
    a = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    for target in (0, 1):
        lift = cc.deeplift(head, a, target).sum(dim=(2, 3))
        torch.testing.assert_close(lift, cc.shapley.exact(head, a, target), rtol=1e-10, atol=1e-12)


def test_softmax_rule_sums_to_delta_at_large_logit_gaps() -> None:
    # logits of the input and the reference far apart (scale 30): no cancellation of large terms
    w = torch.randn(5, dtype=torch.float64)

    def head(a: Tensor) -> Tensor:
        return (F.softmax(30 * a.flatten(1), dim=1) * w).sum(1, keepdim=True)

    traced = torch.fx.symbolic_trace(head)
    a = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    ref = torch.randn(3, 5, 1, 1, dtype=torch.float64) - 2
    contrib, delta = cc.deeplift(traced, a, 0, reference=ref, return_delta=True)
    gap = head(a) - head(ref)
    assert float((delta.abs() / gap[:, 0].abs()).max()) < 1e-10
    # one map changing: it gets all of the change (the one-player Shapley value)
    ref1 = a.clone()
    ref1[:, 2] = 0
    contrib = cc.deeplift(traced, a, 0, reference=ref1)
    torch.testing.assert_close(contrib[:, 2, 0, 0], (head(a) - head(ref1))[:, 0], rtol=1e-10, atol=1e-13)
    assert contrib[:, [0, 1, 3, 4]].abs().max() < 1e-13


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 4])
def test_multi_head_attention_decomposition_is_the_module(batch_first: bool, kdim: int | None) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(6, 2, batch_first=batch_first, kdim=kdim, vdim=kdim).double().eval()
    shape = (2, 5, 6) if batch_first else (5, 2, 6)
    q = torch.randn(shape, dtype=torch.float64)
    kv = torch.randn(shape[:2] + (kdim or 6,), dtype=torch.float64)
    ours = multi_head_attention(mha, q, kv, kv, need_weights=True)
    theirs = mha(q, kv, kv, need_weights=True)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no masks"):
        multi_head_attention(mha, q, kv, kv, attn_mask=torch.zeros(5, 5, dtype=torch.bool))


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "hooks"])
@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
def test_attention_block_sums_to_delta_exactly(traced: bool, functional: bool) -> None:
    if functional and not traced:
        pytest.skip("functions in a plain head are invisible to hooks (documented); trace the head")
    head = _seeded(AttentionHead(k=6, heads=2, functional=functional))
    head = torch.fx.symbolic_trace(head) if traced else head
    a = torch.randn(3, 6, 2, 3, dtype=torch.float64)
    for target in range(3):
        contrib, delta = cc.deeplift(head, a, target, return_delta=True)
        with torch.no_grad():
            gap = head(a)[:, target] - head(torch.zeros_like(a))[:, target]
        assert float((delta.abs() / gap.abs()).max()) < 1e-10


def test_module_and_functional_attention_give_the_same_contributions() -> None:
    a = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    module = torch.fx.symbolic_trace(_seeded(AttentionHead(k=6)))
    functional = torch.fx.symbolic_trace(_seeded(AttentionHead(k=6, functional=True)))
    torch.testing.assert_close(cc.deeplift(module, a, 1), cc.deeplift(functional, a, 1), rtol=1e-9,
                               atol=1e-12)


def test_lift_cam_of_a_tiny_attention_head_against_exact_shapley_values() -> None:
    # K = 6 maps through attention, LayerNorm, GELU and residuals: the head is not linear, so LIFT-CAM
    # approximates the Shapley values; it must be closer to them than the gradient x input
    head = torch.fx.symbolic_trace(_seeded(AttentionHead(k=6, heads=2), std=0.3))
    a = torch.randn(16, 6, 2, 2, dtype=torch.float64)
    target = torch.arange(16) % 3
    phi = cc.shapley.exact(head, a, target)
    lift = cc.deeplift(head, a, target).sum(dim=(2, 3))
    a_in = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(head(a_in).gather(1, target[:, None]).sum(), a_in)
    grad_x_input = (g * a).sum(dim=(2, 3))
    cos_lift = F.cosine_similarity(lift, phi, dim=1)
    cos_grad = F.cosine_similarity(grad_x_input, phi, dim=1)
    torch.testing.assert_close(lift.sum(1), phi.sum(1), rtol=1e-10, atol=1e-12)  # both: F(A) - F(0)
    assert float(cos_lift.mean()) > float(cos_grad.mean())
    assert float((lift - phi).abs().sum()) < float((grad_x_input - phi).abs().sum())


def _vit_b16(size: int = 224) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=size).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the classifier at zero
    return model


VIT_LAYER = "encoder.layers.encoder_layer_10"


@pytest.mark.parametrize("size", [64, pytest.param(224, marks=pytest.mark.slow)])
def test_vit_b16_delta_at_the_last_block_is_at_rounding(size: int) -> None:
    # issue 24's check: the token sequence entering ViT-B/16's last block; head = last block, final
    # LayerNorm, class token, classifier (random weights), in float64: the rules are exact. 64 px: the
    # same network on a 4x4 patch grid (fast)
    model = _vit_b16(size).double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    body, head = token_split(model, VIT_LAYER, x)
    with torch.no_grad():
        a = body(x)
        assert a.shape == (1, 768, size // 16, size // 16) and torch.equal(head(a), model(x))
        gap = head(a)[:, 3] - head(torch.zeros_like(a))[:, 3]
    _, delta = cc.deeplift(head, a, 3, return_delta=True)
    assert float(delta.abs().max() / gap.abs().max()) < 1e-10


@pytest.mark.slow
def test_vit_b16_maps_at_the_last_block() -> None:
    model = _vit_b16()
    x = torch.randn(1, 3, 224, 224)
    assert cc.last_map_layer(model, x) == VIT_LAYER
    for name in ("LIFT-CAM", "Grad-CAM"):
        sal = cc.get_method(name, model, VIT_LAYER)(x, target=3).saliency
        assert torch.isfinite(sal).all() and float(sal.std()) > 0
