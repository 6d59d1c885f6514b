"""The traced split on torchvision CNN classifiers (issue 13 item 1 and its sweep).

Fast: one model per family on a small input (`make test`). Slow: every CNN classifier at 224 px, as
``python -m cam_core.evaluation.torchvision_sweep`` does for the committed table
``results/issue13_sweep.csv``.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cam_core as cc
from cam_core.evaluation.torchvision_sweep import (
    PIECEWISE_LINEAR_TOL,
    cnn_classifiers,
    sweep_one,
    transformer_classifiers,
    transformer_cuts,
)
from cam_core.model.map_layer import last_map_layer

#: documented bound (README, "Explaining any torchvision CNN") for heads that are not piecewise linear
OTHER_HEADS_TOL = 1e-4


def _check(row: dict[str, object]) -> None:
    assert row["split_exact"], row
    assert row["lift_finite"] and row["gradcam_finite"], row
    if row["resolvable"]:  # |F(A) - F(0)| above float32 rounding of the logit
        tol = PIECEWISE_LINEAR_TOL if row["piecewise_linear"] else OTHER_HEADS_TOL
        assert row["delta_rel"] < tol, row  # float32, what users get
        assert not row["delta_rel_f64"] >= 1e-9, row  # the rules are exact (NaN: not measured)
    else:  # maps of ~1e-9 (GoogLeNet's init): the float32 gap is noise; the error is as small as it
        assert row["delta_abs"] < 1e-6, row


@pytest.mark.parametrize("families", [
    ("densenet121", "mobilenet_v2", "squeezenet1_1"),
    ("mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5"),
    ("regnet_y_400mf", "shufflenet_v2_x0_5", "resnet18"),
    ("convnext_tiny", "googlenet"),
    ("inception_v3", "alexnet"),
])
def test_one_model_per_family(families: tuple[str, ...]) -> None:
    for arch in families:
        _check(sweep_one(arch, size=64, float64=False))


def test_68_cnn_classifiers() -> None:
    names = cnn_classifiers()
    assert len(names) == 68 and "convnext_tiny" in names and not any("vit" in n for n in names)


def test_layer_is_the_last_4d_map_and_the_default_names() -> None:
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    assert last_map_layer(torchvision.models.resnet18(num_classes=3), x) == "layer4"
    assert last_map_layer(torchvision.models.mobilenet_v2(num_classes=3), x) == "features"


def test_traced_split_refuses_a_cut_inside_a_skip_connection_and_says_what_to_pass() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=3).eval()
    with pytest.raises(ValueError, match=r"path around 'features.3.conv.0'.*split=\(body, head\)"):
        cc.split_model(model, "features.3.conv.0")  # inside an inverted residual block
    with pytest.raises(ValueError, match=r"called 2 times.*split=\(body, head\)"):
        cc.split_model(torchvision.models.resnet18(num_classes=3), "layer4.1.relu")


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        if a.mean() > 0:  # control flow on a tensor: torch.fx cannot trace it
            a = a * 2
        return self.fc(a.mean(dim=(2, 3)))


def test_untraceable_model_error_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"torch.fx cannot trace DataDependent.*split=\(body, head\)"):
        cc.split_model(DataDependent(), "conv")
    res = cc.GradCAM(DataDependent(), "conv")(torch.randn(1, 3, 8, 8))  # gradients only: hook path
    assert torch.isfinite(res.saliency).all()


def test_traced_head_does_not_write_into_the_callers_activations() -> None:
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=3).eval()  # head: F.relu(A, inplace=True) ...
    body, head = cc.split_model(model, "features")
    with torch.no_grad():
        a = body(torch.randn(1, 3, 64, 64))
        before = a.clone()
        head(a)
    assert torch.equal(a, before) and (a < 0).any()


@pytest.mark.slow
@pytest.mark.parametrize("arch", cnn_classifiers())
def test_sweep_every_cnn_classifier_at_224(arch: str) -> None:
    _check(sweep_one(arch, size=224))


# ---- transformers (issue 24 item 4) -----------------------------------------------------------------
def test_12_transformer_classifiers_and_their_cuts() -> None:
    names = transformer_classifiers()
    assert len(names) == 12 and {"vit_b_16", "swin_t", "swin_v2_t", "maxvit_t", "vit_h_14"} <= set(names)
    assert transformer_cuts("vit_b_16") == [None] and transformer_cuts("swin_v2_s") == [None, "features.5"]


@pytest.mark.parametrize("arch", ["vit_b_16", "swin_t", pytest.param("swin_v2_t", marks=pytest.mark.slow),
                                  pytest.param("maxvit_t", marks=pytest.mark.slow)])  # MaxViT: 224 px
def test_one_transformer_per_family(arch: str) -> None:
    for layer in transformer_cuts(arch):
        row = sweep_one(arch, size=64, layer=layer)  # ViT: the same network on a 4x4 patch grid
        _check(row)
        assert row["delta_rel_f64"] < 1e-10, row  # attention, LayerNorm, GELU: exact rules
        if arch == "vit_b_16":
            assert row["layer"] == "encoder.layers.encoder_layer_10" and row["maps"] == "768x4x4"


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "layer"),
                         [(a, cut) for a in transformer_classifiers() for cut in transformer_cuts(a)])
def test_sweep_every_transformer_classifier_at_224(arch: str, layer: str | None) -> None:
    row = sweep_one(arch, size=224, layer=layer)
    _check(row)
    assert row["delta_rel_f64"] < 1e-10, row
