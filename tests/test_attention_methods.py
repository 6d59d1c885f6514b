"""Attention rollout and Chefer et al.'s relevance (issue 24 item 3), on small torchvision ViTs."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

import cam_core as cc


def vit(layers: int = 1, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=4).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def _attention_of_the_module(model: VisionTransformer, x: torch.Tensor, block: int = 0) -> torch.Tensor:
    """(N, heads, T, T) from nn.MultiheadAttention itself (need_weights=True), an independent oracle."""
    seen = {}
    layer = model.encoder.layers[block]
    handle = layer.ln_1.register_forward_hook(lambda _m, _i, out: seen.setdefault("y", out))
    with torch.no_grad():
        model(x)
        handle.remove()
        _, w = layer.self_attention(seen["y"], seen["y"], seen["y"], need_weights=True,
                                    average_attn_weights=False)
    return w


def test_registered_apart_from_the_paper_methods() -> None:
    assert cc.TRANSFORMER_METHODS == ["Rollout", "Chefer"]
    assert cc.METHODS["Rollout"] is cc.AttentionRollout and cc.METHODS["Chefer"] is cc.CheferRelevance
    assert not set(cc.TRANSFORMER_METHODS) & {*cc.PAPER_METHODS, *cc.RECENT_METHODS, *cc.SUPPLEMENT_METHODS}


def test_rollout_of_one_block_is_half_the_class_tokens_attention() -> None:
    # one block: R = 0.5 mean_h A + 0.5 I (rows of A sum to 1); the patch part of the class row is 0.5 A
    model, x = vit(), torch.randn(2, 3, 32, 32)
    res = cc.AttentionRollout(model, "encoder.layers.encoder_layer_0")(x)
    a = _attention_of_the_module(model, x).mean(1)  # (N, T, T)
    torch.testing.assert_close(res.cam, 0.5 * a[:, 0, 1:].view(2, 4, 4), rtol=1e-5, atol=1e-7)
    assert torch.equal(res.alpha, torch.zeros(2, 16))


def test_rollout_multiplies_the_blocks() -> None:
    model, x = vit(layers=2), torch.randn(1, 3, 32, 32)
    res = cc.AttentionRollout(model, "encoder.layers.encoder_layer_0")(x)
    eye = torch.eye(17)
    hats = [0.5 * _attention_of_the_module(model, x, b).mean(1) + 0.5 * eye for b in (0, 1)]
    r = hats[1] @ hats[0]
    torch.testing.assert_close(res.cam, r[:, 0, 1:].view(1, 4, 4), rtol=1e-5, atol=1e-7)


def test_chefer_relevance_of_one_block_is_the_positive_gradient_times_attention() -> None:
    model, x = vit(), torch.randn(2, 3, 32, 32)
    a = _attention_of_the_module(model, x)  # (N, heads, T, T)
    layer, attn = model.encoder.layers[0], model.encoder.layers[0].self_attention
    seen = {}
    handles = [layer.register_forward_pre_hook(lambda _m, args: seen.setdefault("input", args[0])),
               layer.ln_1.register_forward_hook(lambda _m, _i, out: seen.setdefault("y", out))]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    v = torch.nn.functional.linear(seen["y"], attn.in_proj_weight[32:], attn.in_proj_bias[32:])  # (N, T, E)
    v = v.unflatten(-1, (2, 8)).transpose(1, 2)  # (N, heads, T, d)

    def logits_of(weights: torch.Tensor) -> torch.Tensor:  # the rest of the model, written out by hand
        t = attn.out_proj((weights @ v).transpose(1, 2).flatten(2)) + seen["input"]
        t = t + layer.mlp(layer.ln_2(t))
        return model.heads(model.encoder.ln(t)[:, 0])

    w = a.clone().requires_grad_(True)
    torch.testing.assert_close(logits_of(w), model(x), rtol=1e-4, atol=1e-5)  # the oracle is the model
    target = torch.tensor([1, 3])
    (g,) = torch.autograd.grad(logits_of(w).gather(1, target[:, None]).sum(), w)
    expected = (g * a).clamp_min(0).mean(1)[:, 0, 1:].view(2, 4, 4)  # R = I + A_bar: the class row
    res = cc.CheferRelevance(model, "encoder.layers.encoder_layer_0")(x, target=target)
    torch.testing.assert_close(res.cam, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["Rollout", "Chefer"])
def test_batch_equals_per_image_and_the_model_is_left_as_it_was(name: str) -> None:
    model, x = vit(layers=2), torch.randn(3, 3, 32, 32)
    model.train()
    flags = [m.training for m in model.modules()]
    method = cc.get_method(name, model, "encoder.layers.encoder_layer_0")
    res = method(x, target=2)
    one = torch.cat([method(x[i : i + 1], target=2).saliency for i in range(3)])
    torch.testing.assert_close(res.saliency, one, rtol=1e-4, atol=1e-5)
    assert [m.training for m in model.modules()] == flags
    assert not any(m._forward_hooks for m in model.modules())
    assert torch.isfinite(res.saliency).all() and res.saliency.shape == (3, 32, 32)


def test_chefer_is_class_specific_rollout_is_not() -> None:
    model, x = vit(layers=2), torch.randn(1, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_0"
    roll = [cc.AttentionRollout(model, layer)(x, target=t).cam for t in (0, 1)]
    chef = [cc.CheferRelevance(model, layer)(x, target=t).cam for t in (0, 1)]
    assert torch.equal(roll[0], roll[1]) and not torch.allclose(chef[0], chef[1])


def test_a_model_without_attention_says_so() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(ValueError, match="nn.MultiheadAttention.*use a CAM method"):
        cc.AttentionRollout(model, "1")(torch.randn(1, 3, 8, 8))
