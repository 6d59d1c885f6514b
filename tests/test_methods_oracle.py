"""Our CAMs against pytorch-grad-cam (an independent implementation) and against the formulas.

Models: torchvision vgg16 (features.29, the last conv block's ReLU: a non-linear head) and resnet50
(layer4: global-average-pool + linear head), randomly initialised (weights=None) under a fixed seed.
pytorch-grad-cam gets its own copy of each model (it calls ``model.eval()`` and never undoes it).

Saliency tolerance: pytorch-grad-cam min-max normalises the layer-resolution map, upsamples it with
``cv2.resize`` (bilinear, half-pixel centres, like ``F.interpolate(align_corners=False)``) and
normalises again; we upsample with ``F.interpolate`` then normalise once. Bilinear upsampling is a
convex combination, so both orders give the same map up to float rounding and its ``1e-7`` epsilon:
measured differences are ~1e-6, and we allow 1e-4.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, ScoreCAM, XGradCAM
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import cam_core as cc

SAL_TOL = 1e-4


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None).eval()


@pytest.fixture(scope="module")
def vgg16() -> tuple[nn.Module, str, torch.Tensor]:
    torch.manual_seed(1)
    return _model("vgg16"), "features.29", torch.randn(2, 3, 64, 64)  # A: (2, 512, 4, 4)


@pytest.fixture(scope="module")
def resnet50() -> tuple[nn.Module, str, torch.Tensor]:
    torch.manual_seed(1)
    return _model("resnet50"), "layer4", torch.randn(2, 3, 96, 96)  # A: (2, 2048, 3, 3)


@pytest.fixture(params=["vgg16", "resnet50"])
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, str, torch.Tensor]:
    return request.getfixturevalue(request.param)


def _close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = 0.0) -> None:
    """float32 sums in another order (numpy vs torch): relative 1e-3 of each value or 1e-5 of the largest."""
    atol = max(atol, 1e-5 * float(theirs.abs().max()))
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-3, atol=atol)


def _theirs(cls: type, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor, **kw):
    """pytorch-grad-cam's saliency (N, H, W) and the activations / gradients it captured."""
    copy_ = copy.deepcopy(model)
    module = dict(copy_.named_modules())[layer]
    cam = cls(copy_, [module], **kw)
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    try:
        saliency = cam(x, targets=targets)
        acts = [a.numpy() for a in cam.activations_and_grads.activations]
        grads = [g.numpy() for g in cam.activations_and_grads.gradients]
    finally:
        cam.activations_and_grads.release()
    return cam, torch.from_numpy(saliency), acts, grads


@pytest.mark.parametrize(("ours", "theirs"), [(cc.GradCAM, GradCAM), (cc.XGradCAM, XGradCAM)])
def test_gradcam_and_xgradcam_match_pytorch_grad_cam(case, ours, theirs) -> None:
    model, layer, x = case
    res = ours(model, layer)(x)
    cam, saliency, acts, grads = _theirs(theirs, model, layer, x, res.target)
    torch.testing.assert_close(res.activations, torch.from_numpy(acts[0]))
    weights = cam.get_cam_weights(x, None, None, acts[0], grads[0])  # their alpha, (N, K)
    _close(res.alpha, torch.from_numpy(weights))
    torch.testing.assert_close(res.saliency, saliency, rtol=0, atol=SAL_TOL)


def test_gradcam_plusplus_matches_pytorch_grad_cam(case) -> None:
    """Same closed form (Chattopadhay et al., Eq. 19). pytorch-grad-cam adds 1e-6 to the denominator
    ``2 g^2 + sum A g^3``, which is not small against ``g^2`` for these gradients (|g| ~ 1e-3). Feeding
    its formula ``(A / s, s g)`` leaves ``sum A * g`` unchanged and divides that epsilon's weight by
    ``s^2``; its weights are then ``s`` times ours exactly. As they are, the saliency maps differ by up
    to ~0.02 (of a [0, 1] map) through that epsilon alone."""
    model, layer, x = case
    res = cc.GradCAMPlusPlus(model, layer)(x)
    cam, saliency, acts, grads = _theirs(GradCAMPlusPlus, model, layer, x, res.target)
    s = 1e4
    weights = cam.get_cam_weights(x, None, None, acts[0] / s, grads[0] * s) / s
    _close(res.alpha, torch.from_numpy(weights))
    assert (res.saliency - saliency).abs().max() < 0.05


def _their_cam(cls: type, model: nn.Module, layer: str, **kw):
    copy_ = copy.deepcopy(model)
    return cls(copy_, [dict(copy_.named_modules())[layer]], **kw)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # its heuristic
def test_ablation_cam_matches_pytorch_grad_cam_on_a_subset_of_maps(case) -> None:
    """pytorch-grad-cam ablates a map by zeroing it (the layer's minimum is 0: post-ReLU) and uses
    (score - ablated) / score, Eq. 9. It re-runs the whole model per map, so here it ablates only the
    ~40 maps its SVD heuristic picks (``ratio_channels_to_ablate``: the top and bottom 2% or 1% by its
    score) of one image, and we compare the alpha of those maps."""
    model, layer, x = case
    x = x[:1]
    res = cc.AblationCAM(model, layer, batch_size=256)(x)
    acts = res.activations.numpy()
    ratio = 20 / acts.shape[1]
    cam = _their_cam(AblationCAM, model, layer, ratio_channels_to_ablate=ratio)
    picked = torch.from_numpy(np.asarray(AblationLayer().activations_to_be_ablated(acts[0], ratio))).long()
    assert len(set(picked.tolist())) >= 30
    try:
        theirs = cam.get_cam_weights(x, cam.target_layers[0], [ClassifierOutputTarget(int(res.target[0]))],
                                     acts, None)  # (1, K); their score for maps it skipped is the original
    finally:
        cam.activations_and_grads.release()
    theirs = torch.from_numpy(np.asarray(theirs))
    # (score - ablated) / score cancels in float32: one ulp of the score (~1e-7 of it) is the floor
    assert theirs[0, picked].abs().max() > 1e-4
    _close(res.alpha[0, picked], theirs[0, picked], atol=1e-6)


@pytest.mark.slow
def test_ablation_cam_matches_pytorch_grad_cam_all_maps(case) -> None:
    """All maps of one image: the saliency maps agree (~1 min each on 2 CPU cores)."""
    model, layer, x = case
    x = x[:1, :, :64, :64]
    res = cc.AblationCAM(model, layer)(x)
    _, saliency, _, _ = _theirs(AblationCAM, model, layer, x, res.target)
    torch.testing.assert_close(res.saliency, saliency, rtol=0, atol=SAL_TOL)


# ---- Score-CAM: against the formula (Wang et al.), and pytorch-grad-cam's variant as documented ----

@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, str, torch.Tensor]:
    """Score-CAM runs the whole model K times per image: a small CNN keeps that cheap (K = 24)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(),  # "4": A is (N, 24, 16, 16) for 32 px
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():  # one constant map (all zero): Score-CAM gives it no mask and alpha 0
        model[3].weight[7] = 0.0
        model[3].bias[7] = -1.0
    return model, "4", x


def _masked_logits(model, x, acts, align_corners: bool, eps: float = 0.0) -> torch.Tensor:
    """Logits of x * s(u(A_k)) for every image and map, one map at a time: (N, K, classes)."""
    out = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            rows = []
            for k in range(acts.shape[1]):
                up = F.interpolate(acts[i, k][None, None], size=x.shape[-2:], mode="bilinear",
                                   align_corners=align_corners)[0, 0]
                lo, hi = up.min(), up.max()
                mask = (up - lo) / (hi - lo + eps) if (hi > lo or eps) else torch.zeros_like(up)
                rows.append(x[i] * mask)
            out.append(model(torch.stack(rows)))  # (K, classes)
    return torch.stack(out)


def test_score_cam_follows_the_paper(small) -> None:
    model, layer, x = small
    res = cc.ScoreCAM(model, layer, batch_size=10)(x)
    logits = _masked_logits(model, x, res.activations, align_corners=False)  # (N, K, classes)
    probs = torch.softmax(logits, dim=2)
    expected = probs[torch.arange(3)[:, None], torch.arange(24)[None, :], res.target[:, None]]  # (N, K)
    flat = res.activations.flatten(2)
    expected[flat.amax(2) == flat.amin(2)] = 0.0  # a constant map masks nothing: alpha 0 (reference code)
    torch.testing.assert_close(res.alpha, expected, rtol=1e-4, atol=1e-7)
    assert (res.alpha[:, 7] == 0).all() and (res.alpha > 0).float().mean() > 0.5 and (res.alpha <= 1).all()


def test_pytorch_grad_cam_score_cam_is_a_softmax_over_maps_of_logits(small) -> None:
    """The difference stated in ScoreCAM's docstring: pytorch-grad-cam weights = softmax over the K maps
    of the target *logit* of each masked input (masks upsampled with align_corners=True, 1e-8 epsilon)."""
    model, layer, x = small
    res = cc.ScoreCAM(model, layer)(x[:1])
    cam = _their_cam(ScoreCAM, model, layer)
    cam.batch_size = 128
    try:
        theirs = cam.get_cam_weights(x[:1], None, [ClassifierOutputTarget(int(res.target[0]))],
                                     res.activations.numpy(), None)
    finally:
        cam.activations_and_grads.release()
    logits = _masked_logits(model, x[:1], res.activations, align_corners=True, eps=1e-8)
    expected = torch.softmax(logits[0, :, res.target[0]], dim=0)[None]  # (1, K)
    torch.testing.assert_close(torch.from_numpy(np.asarray(theirs)), expected, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(res.alpha, expected)
