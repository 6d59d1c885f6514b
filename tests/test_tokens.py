"""Token maps (issue 24 item 1): a transformer layer's token sequence or channels-last output viewed as
CAM maps ``(N, C, h, w)``, the inverse view inside the head, and the layer chosen by ``last_map_layer``."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import SwinTransformer, VisionTransformer

import cam_core as cc
from cam_core.model.token_split import token_split  # also cc.token_split
from cam_core.model.tokens import TokenGrid, bind_head  # also cc.TokenGrid

LAYER = "encoder.layers.encoder_layer_0"


def tiny_vit(num_classes: int = 5, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=num_classes).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts it at 0: constant logits
    return model


def tiny_swin(seed: int = 0) -> SwinTransformer:
    torch.manual_seed(seed)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                           window_size=[2, 2], num_classes=3).eval()


def test_views_are_exact_inverses() -> None:
    t = torch.randn(2, 1 + 4 * 3 + 2, 5)  # class token, a 4x3 grid, two trailing tokens
    grid = TokenGrid(size=(4, 3), prefix=1).resolve(t, (8, 6))
    a = grid.to_map(t)
    assert a.shape == (2, 5, 4, 3)
    assert torch.equal(a[:, :, 1, 2], t[:, 1 + 1 * 3 + 2])  # raster order
    assert torch.equal(grid.to_output(a, grid.context(t)), t)
    nhwc = torch.randn(2, 4, 3, 5)
    grid = TokenGrid().resolve(nhwc, (8, 6))
    assert grid.layout == "nhwc" and torch.equal(grid.to_map(nhwc), nhwc.permute(0, 3, 1, 2))
    assert torch.equal(grid.to_output(grid.to_map(nhwc)), nhwc)
    assert TokenGrid().resolve(torch.randn(2, 5, 4, 3), (8, 6)).layout == "nchw"  # maps stay maps


@pytest.mark.parametrize(("tokens", "image", "grid"), [
    (197, (224, 224), ((14, 14), 1)),  # ViT-B/16: class token + 14x14
    (261, (256, 256), ((16, 16), 5)),  # class token + 4 registers
    (99, (224, 112), ((14, 7), 1)),  # a portrait image
    (49, (7, 7), ((7, 7), 0)),  # patches only
])
def test_grid_inferred_from_the_token_count_and_the_image(tokens: int, image: tuple[int, int],
                                                          grid: tuple) -> None:
    resolved = TokenGrid().resolve(torch.zeros(1, tokens, 3), image)
    assert (resolved.size, resolved.prefix) == grid


def test_bad_grids_say_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"tokens=\(h, w\)"):
        TokenGrid().resolve(torch.zeros(1, 600, 4), (16, 16))  # no square in 584 .. 600
    with pytest.raises(ValueError, match="does not fit"):
        TokenGrid(size=(8, 8)).resolve(torch.zeros(1, 17, 4), (16, 16))
    with pytest.raises(ValueError, match="layout"):
        TokenGrid(layout="nwhc")
    with pytest.raises(ValueError, match="tokens must be"):
        cc.GradCAM(tiny_vit(), LAYER, tokens="14x14")


def test_vit_split_is_exact_bit_for_bit_and_the_head_stays_traced() -> None:
    model, x = tiny_vit(), torch.randn(3, 3, 32, 32)
    body, head = token_split(model, LAYER, x)
    with torch.no_grad():
        a = body(x)
        assert a.shape == (3, 16, 4, 4)
        assert torch.equal(head(a), model(x))
        # tiled batches (R * N rows, row b is image b % N) use image b % N's class token
        assert torch.equal(head(torch.cat([a, a])), torch.cat([model(x)] * 2))
    assert isinstance(head, torch.fx.GraphModule)
    with torch.no_grad():  # an explicit grid gives the same
        assert torch.equal(cc.token_split(model, LAYER, x, tokens=cc.TokenGrid(size=(4, 4)))[1](a), model(x))


def test_last_map_layer_prefers_the_last_token_block_over_the_patch_embedding() -> None:
    # the last block's patch tokens never reach the class token: the block before it is the last useful cut
    assert cc.last_map_layer(tiny_vit(), torch.randn(1, 3, 32, 32)) == LAYER
    torch.manual_seed(0)
    assert cc.last_map_layer(tiny_vit(num_classes=3, seed=1), torch.randn(1, 3, 32, 32)) == LAYER
    assert cc.last_map_layer(tiny_swin(), torch.randn(1, 3, 16, 16)) == "permute"  # maps (N, C, h, w)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=3)
    assert cc.last_map_layer(resnet, torch.randn(1, 3, 64, 64)) == "layer4"


@pytest.mark.parametrize("name", [*cc.PAPER_METHODS, "SHAP-CAM", "LayerCAM", "HiResCAM", "EigenCAM",
                                  "ShapleyCAM", "DeepSHAP-CAM"])
def test_every_method_runs_on_token_maps(name: str) -> None:
    model, x = tiny_vit(), torch.randn(2, 3, 32, 32)
    kwargs = {"background": torch.randn(2, 3, 32, 32)} if name == "DeepSHAP-CAM" else {}
    res = cc.get_method(name, model, LAYER, **kwargs)(x)
    assert res.alpha.shape == (2, 16) and res.cam.shape == (2, 4, 4) and res.saliency.shape == (2, 32, 32)
    assert torch.isfinite(res.saliency).all() and bool((res.saliency.flatten(1).std(1) > 0).all())


def test_lift_cam_local_accuracy_with_the_class_token_held() -> None:
    model, x = tiny_vit(), torch.randn(3, 3, 32, 32).double()
    model.double()
    res = cc.LiftCAM(model, LAYER)(x, target=2)
    body, head = token_split(model, LAYER, x)
    with torch.no_grad():
        a = body(x)
        gap = head(a)[:, 2] - head(torch.zeros_like(a))[:, 2]
    torch.testing.assert_close(res.alpha.sum(1), gap, rtol=1e-10, atol=1e-12)
    # batch == per-image loop: each image's own class token
    one = torch.cat([cc.LiftCAM(model, LAYER)(x[i : i + 1], target=2).alpha for i in range(3)])
    torch.testing.assert_close(res.alpha, one, rtol=1e-9, atol=1e-12)


def test_gradients_of_an_unsplit_model_are_those_of_the_patch_tokens() -> None:
    model, x = tiny_vit(), torch.randn(2, 3, 32, 32)
    split = cc.GradCAM(model, LAYER)(x, target=1)
    hooked = cc.GradCAM(model, LAYER)
    hooked.split = None  # the forward-hook path (models that cannot be split)
    res = hooked(x, target=1)
    torch.testing.assert_close(res.alpha, split.alpha, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.saliency, split.saliency, rtol=1e-4, atol=1e-5)


def test_channels_last_stage_of_swin() -> None:
    model, x = tiny_swin(), torch.randn(2, 3, 16, 16)
    res = cc.LiftCAM(model, "features.3")(x, target=1)  # (N, 2, 2, 16) channels-last
    assert res.alpha.shape == (2, 16) and res.cam.shape == (2, 2, 2)
    body, head = token_split(model, "features.3", x)
    with torch.no_grad():
        assert torch.equal(head(body(x)), model(x))
    assert res.alpha.sum(1).sub(head(body(x))[:, 1] - head(torch.zeros(2, 16, 2, 2))[:, 1]).abs().max() < 1e-5
    raw = cc.GradCAM(model, "features.3", tokens=False)(x)  # tokens=False: the output taken as it is
    assert raw.alpha.shape == (2, 2) and raw.cam.shape == (2, 2, 16)


def test_bind_head_keeps_a_plain_head_plain() -> None:
    grid = TokenGrid(size=(2, 2), prefix=1, layout="tokens")
    head = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(5 * 3, 2))
    ctx = torch.randn(2, 1, 3)
    bound = bind_head(head, grid, ctx)
    a = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(bound(a), head(grid.to_output(a, ctx)))
    with pytest.raises(ValueError, match="R \\* N rows"):
        bound(torch.randn(3, 3, 2, 2))
