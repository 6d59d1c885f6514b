"""LayerCAM, HiResCAM, EigenCAM and ShapleyCAM against pytorch-grad-cam 1.5 (grad-cam==1.5.7) on the
same models, and against their formulas.

Models: torchvision vgg16 (features.29, a ReLU head) and resnet18 (layer4, GAP + linear; the same head
as resnet50, faster), random weights under a fixed seed, small inputs; plus a tiny CNN whose head
has a smooth non-linearity (GELU), where ShapleyCAM's Hessian term is not zero. Saliency maps agree
to 1e-4 (pytorch-grad-cam normalises before and after ``cv2.resize``; see test_methods_oracle.py).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, HiResCAM, LayerCAM, ShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from test_methods_oracle import SAL_TOL, _model  # one seeded torchvision model helper for the oracle tests
from torch import nn

import cam_core as cc


@pytest.fixture(scope="module")
def vgg16() -> tuple[nn.Module, str, torch.Tensor]:
    torch.manual_seed(1)
    return _model("vgg16"), "features.29", torch.randn(2, 3, 48, 48)  # A: (2, 512, 3, 3)


@pytest.fixture(scope="module")
def resnet18() -> tuple[nn.Module, str, torch.Tensor]:
    torch.manual_seed(1)
    return _model("resnet18"), "layer4", torch.randn(2, 3, 96, 96)  # A: (2, 512, 3, 3)


@pytest.fixture(scope="module")
def smooth() -> tuple[nn.Module, str, torch.Tensor]:
    """A tiny CNN with a GELU in the head: F is not piecewise linear, so H A != 0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),  # "4": A is (N, 12, 8, 8) for 16 px
        nn.Conv2d(12, 12, 1), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 5),
    ).eval()
    return model, "4", torch.randn(3, 3, 16, 16)


@pytest.fixture(params=["vgg16", "resnet18", "smooth"])
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, str, torch.Tensor]:
    return request.getfixturevalue(request.param)


def _theirs(cls: type, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor):
    """pytorch-grad-cam's saliency (N, H, W) on its own copy of the model, and the object."""
    copy_ = copy.deepcopy(model)
    cam = cls(copy_, [dict(copy_.named_modules())[layer]])
    try:
        saliency = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    finally:
        cam.activations_and_grads.release()
    return cam, torch.from_numpy(saliency)


@pytest.mark.parametrize(("ours", "theirs"), [(cc.LayerCAM, LayerCAM), (cc.HiResCAM, HiResCAM)])
def test_pixelwise_cams_match_pytorch_grad_cam(case, ours, theirs) -> None:
    model, layer, x = case
    res = ours(model, layer)(x)
    _, saliency = _theirs(theirs, model, layer, x, res.target)
    torch.testing.assert_close(res.saliency, saliency, rtol=0, atol=SAL_TOL)


def test_pixelwise_formulas_and_mass_equivalent_alpha(smooth) -> None:
    """LayerCAM's and HiResCAM's alpha give each map its total in the CAM; HiResCAM's is XGrad-CAM's."""
    model, layer, x = smooth
    ctx_res = cc.HiResCAM(model, layer)(x)
    layer_res = cc.LayerCAM(model, layer)(x)
    xgrad = cc.XGradCAM(model, layer)(x)
    torch.testing.assert_close(ctx_res.alpha, xgrad.alpha, rtol=1e-4, atol=1e-7)
    a = layer_res.activations
    # the cam's total mass equals sum_k alpha_k sum_ij A_k before the ReLU; check where no pixel is clipped
    for res in (ctx_res, layer_res):
        pre = (res.alpha * a.sum(dim=(2, 3))).sum(1)  # (N,)
        clipped = (res.cam == 0).flatten(1).any(1)
        ok = ~clipped
        if ok.any():
            torch.testing.assert_close(res.cam.flatten(1).sum(1)[ok], pre[ok], rtol=1e-4, atol=1e-6)
    assert (layer_res.cam >= 0).all()


def test_hirescam_equals_gradcam_on_a_gap_linear_head(resnet18) -> None:
    model, layer, x = resnet18
    hi, grad = cc.HiResCAM(model, layer)(x), cc.GradCAM(model, layer)(x)
    torch.testing.assert_close(hi.saliency, grad.saliency, rtol=0, atol=1e-5)


def test_eigencam_matches_pytorch_grad_cam_up_to_the_sign_of_the_component(case) -> None:
    """The pre-ReLU map is pytorch-grad-cam's projection times +-1 (its SVD sign is LAPACK's); where
    the signs agree, the saliency maps agree; our sign makes sum_k v_k >= 0."""
    model, layer, x = case
    res = cc.EigenCAM(model, layer)(x)
    centred = res.activations - res.activations.mean(dim=(2, 3), keepdim=True)
    ours = torch.einsum("nk,nkhw->nhw", res.alpha, centred)  # (N, h, w) before the ReLU
    theirs = torch.from_numpy(get_2d_projection(res.activations.numpy()))
    agree = (ours * theirs).flatten(1).sum(1) > 0  # (N,)
    sign = torch.where(agree, 1.0, -1.0)[:, None, None]
    atol = 1e-4 * float(theirs.abs().max())
    torch.testing.assert_close(ours, sign * theirs, rtol=1e-3, atol=atol)
    assert (res.alpha.sum(1) >= 0).all()
    torch.testing.assert_close(res.cam, torch.relu(ours))
    _, saliency = _theirs(EigenCAM, model, layer, x, res.target)
    assert agree.any()  # so that the saliency maps are compared at least once
    torch.testing.assert_close(res.saliency[agree], saliency[agree], rtol=0, atol=SAL_TOL)


def test_eigencam_ignores_the_target(vgg16) -> None:
    model, layer, x = vgg16
    a, b = cc.EigenCAM(model, layer)(x, target=0), cc.EigenCAM(model, layer)(x, target=7)
    torch.testing.assert_close(a.saliency, b.saliency)


def test_shapleycam_matches_pytorch_grad_cam(case) -> None:
    model, layer, x = case
    res = cc.ShapleyCAM(model, layer)(x)
    cam, saliency = _theirs(ShapleyCAM, model, layer, x, res.target)
    torch.testing.assert_close(res.saliency, saliency, rtol=0, atol=SAL_TOL)


def test_shapleycam_is_gradcam_on_piecewise_linear_heads_and_not_on_smooth_ones(case, request) -> None:
    model, layer, x = case
    s, g = cc.ShapleyCAM(model, layer)(x), cc.GradCAM(model, layer)(x)
    if "smooth" in request.node.callspec.id:
        assert (s.alpha - g.alpha).abs().max() > 1e-3 * g.alpha.abs().max()
    else:
        torch.testing.assert_close(s.alpha, g.alpha, rtol=1e-5, atol=1e-9)


def test_shapleycam_hessian_term_against_finite_differences(smooth) -> None:
    """alpha = mean_ij(g - H A / 2); H A = d/de g(A + e A) at e = 0, by central differences."""
    model, layer, x = smooth
    res = cc.ShapleyCAM(model, layer)(x)
    split = cc.split_model(model, layer)
    a, t = res.activations.double(), res.target
    head = copy.deepcopy(split.head).double()

    def grad_at(b: torch.Tensor) -> torch.Tensor:
        b = b.clone().requires_grad_(True)
        (gr,) = torch.autograd.grad(head(b).gather(1, t[:, None]).sum(), b)
        return gr

    e = 1e-4
    hvp = (grad_at(a * (1 + e)) - grad_at(a * (1 - e))) / (2 * e)
    expected = (grad_at(a) - 0.5 * hvp).mean(dim=(2, 3))
    torch.testing.assert_close(res.alpha.double(), expected, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["LayerCAM", "HiResCAM", "EigenCAM", "ShapleyCAM"])
def test_recent_methods_are_registered_batched_and_leave_the_model_alone(smooth, name) -> None:
    model, layer, x = smooth
    flags = [m.training for m in model.modules()]
    cls = cc.METHODS[name]
    assert cls.name == name and name in cc.RECENT_METHODS
    batch = cls(model, layer)(x)
    single = torch.cat([cls(model, layer)(x[i : i + 1]).saliency for i in range(x.shape[0])])
    torch.testing.assert_close(batch.saliency, single, rtol=0, atol=1e-5)
    assert [m.training for m in model.modules()] == flags
    assert torch.isfinite(batch.saliency).all()
    const = cls(model, layer)(torch.zeros(1, 3, 16, 16))
    assert torch.isfinite(const.saliency).all()


def test_gradcam_oracle_still_agrees(vgg16) -> None:
    """The base-class extension point (``combine``) leaves Eq. 1 methods unchanged."""
    model, layer, x = vgg16
    res = cc.GradCAM(model, layer)(x)
    _, saliency = _theirs(GradCAM, model, layer, x, res.target)
    torch.testing.assert_close(res.saliency, saliency, rtol=0, atol=SAL_TOL)
    assert np.isfinite(saliency.numpy()).all()
