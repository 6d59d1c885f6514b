"""Issue 13's defects D1-D4, the target and inference-mode checks; each test failed before the fix."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cam_core as cc
from cam_core.methods.base import normalize_per_image, upsample

N_CLASSES = 5


def pre_relu_model(inplace: bool) -> nn.Sequential:
    """Layer "0" is a conv (maps with negative values); the head starts with ``ReLU(inplace=inplace)``
    (VGG16 split at ``features.28``): the first-linear shortcut of SHAP-CAM / Ablation-CAM applies."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 16), nn.ReLU(inplace=inplace), nn.Linear(16, N_CLASSES),
    )  # fmt: skip


@pytest.mark.parametrize("name", ["Ablation-CAM", "SHAP-CAM"])
def test_d1_head_stem_does_not_overwrite_the_activations(name: str) -> None:
    x = torch.randn(2, 3, 8, 8)
    results = [cc.get_method(name, pre_relu_model(inplace), "0")(x) for inplace in (True, False)]
    with torch.no_grad():
        a = pre_relu_model(True)[0](x)
    assert (a < 0).any()
    for res in results:
        torch.testing.assert_close(res.activations, a)  # not ReLU(A)
    torch.testing.assert_close(results[0].saliency, results[1].saliency)
    torch.testing.assert_close(results[0].alpha, results[1].alpha)


def test_d1_permutation_leaves_the_callers_activations_alone() -> None:
    _, head = cc.split_model(pre_relu_model(True), "0")
    a = torch.randn(2, 6, 8, 8)
    before = a.clone()
    cc.shapley.permutation(head, a, 1, n_orderings=3)
    cc.shapley.linear_closed_form(head, a, 1)
    torch.testing.assert_close(a, before, rtol=0, atol=0)


class Untraceable(nn.Module):
    """A data-dependent branch (torch.fx cannot trace it, so the methods take the hook path) and a
    functional in-place ReLU right after the target layer, as in DenseNet's forward."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, N_CLASSES)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        if bool(a.sum() > -1e30):  # always true, but only known from the data
            a = F.relu(a, inplace=self.inplace)
        return self.fc(a.mean(dim=(2, 3)))


class _Head(nn.Module):
    def __init__(self, model: Untraceable) -> None:
        super().__init__()
        self.fc = model.fc

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(a).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["Grad-CAM", "Grad-CAM++", "XGrad-CAM"])
def test_d2_hook_path_copies_the_activations(name: str) -> None:
    model = Untraceable(inplace=True)
    x = torch.randn(3, 3, 8, 8)
    with pytest.raises(ValueError):
        cc.split_model(model, "conv")
    hooked = cc.get_method(name, model, "conv")(x)
    explicit = cc.get_method(name, model, "conv", split=(model.conv, _Head(model)))(x)
    assert (hooked.activations < 0).any()  # A, not ReLU(A)
    torch.testing.assert_close(hooked.activations, explicit.activations)
    torch.testing.assert_close(hooked.alpha, explicit.alpha)
    torch.testing.assert_close(hooked.saliency, explicit.saliency)


@pytest.mark.parametrize("name", ["Grad-CAM", "Grad-CAM++", "XGrad-CAM"])
def test_d3_hook_path_on_a_frozen_model(name: str) -> None:
    x = torch.randn(2, 3, 8, 8)
    expected = cc.get_method(name, Untraceable(inplace=False), "conv")(x)
    frozen = Untraceable(inplace=False).requires_grad_(False)
    res = cc.get_method(name, frozen, "conv")(x)
    torch.testing.assert_close(res.alpha, expected.alpha)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("value", [0.3, 1.7, 123.4, 1e4])
def test_d4_constant_map_upsampled_normalises_to_zero(value: float) -> None:
    up = upsample(torch.full((2, 1, 1), value), (224, 224))  # bilinear rounding: a spread of a few ulps
    assert torch.equal(normalize_per_image(up), torch.zeros_like(up))
    # a map that really varies is still stretched to [0, 1]
    ramp = torch.linspace(0, 1e-4 * value, 49).view(1, 7, 7) + value  # ~1000 ulps
    out = normalize_per_image(ramp)
    assert out.min() == 0 and out.max() == 1


def test_float_targets_are_rejected_not_truncated() -> None:
    model = pre_relu_model(False)
    x = torch.randn(2, 3, 8, 8)
    for name in ("Grad-CAM", "LIFT-CAM"):
        cam = cc.get_method(name, model, "0")
        with pytest.raises(ValueError, match="integer"):
            cam(x, target=3.9)
        with pytest.raises(ValueError, match="integer"):
            cam(x, target=torch.tensor([1.0, 2.0]))
    _, head = cc.split_model(model, "0")
    with pytest.raises(ValueError, match="integer"):
        cc.deeplift(head, torch.randn(2, 6, 8, 8), target=1.5)


def test_deeplift_target_out_of_range() -> None:
    _, head = cc.split_model(pre_relu_model(False), "0")
    a = torch.randn(2, 6, 8, 8)
    for bad in (N_CLASSES, -1, torch.tensor([0, 7])):
        with pytest.raises(ValueError, match=r"out of range.*5 classes"):
            cc.deeplift(head, a, target=bad)


def test_inference_mode_says_use_no_grad() -> None:
    model = pre_relu_model(False)
    x = torch.randn(2, 3, 8, 8)
    _, head = cc.split_model(model, "0")
    with torch.inference_mode():
        for name in ("Grad-CAM", "LIFT-CAM"):
            with pytest.raises(RuntimeError, match=r"inference_mode.*no_grad"):
                cc.get_method(name, model, "0")(x)
        with pytest.raises(RuntimeError, match=r"inference_mode.*no_grad"):
            cc.deeplift(head, torch.randn(2, 6, 8, 8), target=1)
    with torch.no_grad():  # what the message recommends works
        res = cc.LiftCAM(model, "0")(x)
    assert torch.isfinite(res.saliency).all()
