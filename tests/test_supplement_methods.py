"""The supplement's CAMs (LRP-CAM, LIME-CAM, DeepSHAP-CAM, KernelSHAP-CAM) against Captum's building
blocks applied to the same head over the activation maps (captum==0.9: ``LRP``, ``Lime``,
``DeepLiftShap``, ``KernelShap``), and against the paper's properties.

Models: a tiny CNN (K = 6 maps: exact Shapley values by enumeration are cheap), a bias-free variant
(LRP's conservation), and torchvision vgg16 / resnet18 heads for LRP (random weights, fixed seed).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import LRP, DeepLiftShap, KernelShap, Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from torch import nn

import cam_core as cc
from cam_core.kernels import shapley, surrogate
from cam_core.kernels.lrp import lrp


def _tiny(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),  # "1": A is (N, 6, 8, 8)
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(96, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias),
    ).eval()


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, str, torch.Tensor]:
    torch.manual_seed(1)
    return _tiny(), "1", torch.randn(3, 3, 8, 8)


def _maps(model: nn.Module, layer: str, x: torch.Tensor):
    split = cc.split_model(model, layer)
    with torch.no_grad():
        a = split.body(x)
    return split, a, split.head(a).argmax(1)


def _channel_mask(a: torch.Tensor) -> torch.Tensor:
    return torch.arange(a.shape[1])[None, :, None, None].expand_as(a[:1]).contiguous()  # (1, K, h, w)


# ---- LRP-CAM ---------------------------------------------------------------------------------------

class _VGGPart(nn.Module):
    """VGG's head with torch.flatten in forward (Captum's LRP wants a rule for every leaf module)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.pool, self.avgpool, self.classifier = model.features[30], model.avgpool, model.classifier

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.pool(a)), 1))


class _ResNetPart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.avgpool, self.fc = model.avgpool, model.fc

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(a), 1))


@pytest.mark.parametrize(("arch", "layer", "part", "size"),
                         [("vgg16", "features.29", _VGGPart, 48), ("resnet18", "layer4", _ResNetPart, 96)])
def test_lrp_cam_matches_captum_lrp(arch, layer, part, size) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    with torch.no_grad():  # non-zero biases, so that the epsilon rule's bias absorption is exercised
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 3, size, size)
    res = cc.LRPCAM(model, layer)(x)
    theirs = LRP(part(copy.deepcopy(model))).attribute(res.activations.clone(), target=res.target)
    expected = theirs.detach().sum(dim=(2, 3))  # (N, K)
    torch.testing.assert_close(res.alpha, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_lrp_cam_conserves_the_logit_and_equals_lift_cam_on_a_bias_free_relu_head() -> None:
    model, x = _tiny(bias=False), torch.randn(3, 3, 8, 8)
    split, a, t = _maps(model, "1", x)
    relevance, delta = lrp(split.head, a, t, epsilon=1e-12, return_delta=True)
    logit = split.head(a).gather(1, t[:, None])[:, 0].detach()
    assert delta.abs().max() < 1e-5 * logit.abs().max()
    res = cc.LRPCAM(model, "1")(x)
    torch.testing.assert_close(res.alpha.sum(1), logit, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.alpha, cc.LiftCAM(model, "1")(x).alpha, rtol=1e-4, atol=1e-6)


def test_lrp_treats_a_module_registered_as_linear_for_deeplift_as_affine() -> None:
    """The VQA head's question gate (``FixedMultiply``, registered in ``LINEAR_MODULES``) gets the
    epsilon rule: on a bias-free ReLU head with the gate, relevance still sums to the logit and equals
    DeepLIFT's (LIFT-CAM's) contributions."""
    from cam_core.vqa.model import FixedMultiply

    torch.manual_seed(0)
    gate = FixedMultiply(torch.rand(2, 16) + 0.5)
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 2 * 2, 16, bias=False), gate, nn.ReLU(),
                         nn.Linear(16, 3, bias=False))
    a = torch.rand(2, 4, 2, 2)
    relevance, delta = lrp(head, a, 1, epsilon=1e-12, return_delta=True)
    logit = head(a)[:, 1].detach()
    assert delta.abs().max() < 1e-5 * logit.abs().max()
    torch.testing.assert_close(relevance, cc.deeplift(head, a, 1), rtol=1e-4, atol=1e-6)


def test_lrp_refuses_a_head_without_a_rule() -> None:
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid())
    with pytest.raises(ValueError, match="no rule for Sigmoid"):
        lrp(head, torch.rand(2, 4, 3, 3), 0)


# ---- LIME-CAM --------------------------------------------------------------------------------------

def test_lime_cam_matches_captum_lime_on_the_same_coalitions(tiny) -> None:
    """Captum's Lime with its defaults (cosine exponential kernel of width 1, Lasso alpha 0.01) fed the
    same coalitions (one interpretable feature per map, baseline 0): the same coefficients."""
    model, layer, x = tiny
    n_samples, seed = 64, 3
    res = cc.LIMECAM(model, layer, n_samples=n_samples, seed=seed)(x)
    split, a, t = _maps(model, layer, x)
    coalitions = surrogate.lime_coalitions(n_samples, a.shape[1], seed)
    for i in range(x.shape[0]):
        rows = iter(coalitions.long())
        lime = Lime(split.head, interpretable_model=SkLearnLasso(alpha=0.01, tol=1e-9, max_iter=100000),
                    similarity_func=get_exp_kernel_similarity_function("cosine", 1.0),
                    perturb_func=lambda *_args, rows=rows, **_kw: next(rows)[None])
        theirs = lime.attribute(a[i : i + 1], baselines=0.0, target=int(t[i]), n_samples=n_samples,
                                feature_mask=_channel_mask(a), return_input_shape=False,
                                perturbations_per_eval=n_samples)  # (1, K)
        torch.testing.assert_close(res.alpha[i], theirs[0].to(res.alpha.dtype), rtol=1e-3, atol=1e-5)
    assert (res.alpha == 0).any() and (res.alpha != 0).any()  # the Lasso zeroes some maps, not all


def test_lime_without_penalty_is_the_weighted_least_squares_fit(tiny) -> None:
    model, layer, x = tiny
    split, a, t = _maps(model, layer, x)
    beta = surrogate.lime(split.head, a, t, n_samples=200, seed=0, alpha=0.0).double()
    z = surrogate.lime_coalitions(200, a.shape[1], 0)
    y = surrogate.coalition_values(split.head, a, t, z).double()  # (M, N)
    energy = a.double().flatten(2).pow(2).sum(2)
    cos = (energy @ z.t() / energy.sum(1, keepdim=True)).sqrt()  # (N, M)
    w = torch.exp(-((1 - cos) ** 2) / 2)
    design = torch.cat([torch.ones(200, 1, dtype=torch.float64), z], 1)
    for i in range(x.shape[0]):
        sw = w[i].sqrt()[:, None]
        sol = torch.linalg.lstsq(sw * design, sw * y[:, i : i + 1]).solution[1:, 0]
        torch.testing.assert_close(beta[i], sol, rtol=1e-6, atol=1e-9)


# ---- KernelSHAP-CAM --------------------------------------------------------------------------------

def test_kernel_shap_cam_enumerating_every_coalition_is_exact_shapley(tiny) -> None:
    model, layer, x = tiny
    split, a, t = _maps(model, layer, x)
    res = cc.KernelSHAPCAM(model, layer, n_samples=62)(x)  # 2^6 - 2 coalitions: all of them
    torch.testing.assert_close(res.alpha, shapley.exact(split.head, a, t), rtol=1e-4, atol=1e-7)


def test_kernel_shap_sampled_converges_to_shapley_and_keeps_local_accuracy(tiny, monkeypatch) -> None:
    model, layer, x = tiny
    split, a, t = _maps(model, layer, x)
    exact = shapley.exact(split.head, a, t)
    monkeypatch.setattr(surrogate, "MAX_ENUMERATED_MAPS", 0)  # force sampling from the kernel
    errors = []
    for m in (100, 10000):
        phi = surrogate.kernel_shap(split.head, a, t, m, seed=1)
        errors.append(float((phi - exact).abs().max()))
        ends = torch.stack([torch.ones(6), torch.zeros(6)])
        full, empty = surrogate.coalition_values(split.head, a, t, ends).double()  # (N,) each
        torch.testing.assert_close(phi.double().sum(1), full - empty, rtol=1e-5, atol=1e-7)
    assert errors[1] < 0.02 * float(exact.abs().max()) and errors[1] < errors[0]


def test_kernel_shap_is_exact_on_an_additive_game_with_any_samples() -> None:
    """GAP + Linear head: v(z) is linear in z, so every full-rank sample gives the Shapley values
    (phi_k = F^c(only map k) - F^c(0)), here K = 24 > 16: sampled, not enumerated."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))
    a, t = torch.rand(2, 24, 3, 3), torch.tensor([1, 4])
    phi = surrogate.kernel_shap(head, a, t, n_samples=300, seed=0)
    torch.testing.assert_close(phi, shapley.linear_closed_form(head, a, t), rtol=1e-4, atol=1e-6)


def test_kernel_shap_agrees_with_captum_kernel_shap(tiny) -> None:
    """Captum's KernelShap (its own kernel sampling, 3000 samples) on one image, maps as features:
    both near the exact values, ours exact here (enumeration)."""
    model, layer, x = tiny
    split, a, t = _maps(model, layer, x)
    torch.manual_seed(0)
    theirs = KernelShap(split.head).attribute(a[:1], baselines=0.0, target=int(t[0]), n_samples=3000,
                                              feature_mask=_channel_mask(a), return_input_shape=False,
                                              perturbations_per_eval=500)
    ours = cc.KernelSHAPCAM(model, layer)(x[:1]).alpha
    assert (ours - theirs.to(ours.dtype)).abs().max() < 0.05 * ours.abs().max()


# ---- DeepSHAP-CAM ----------------------------------------------------------------------------------

def test_deepshap_cam_matches_captum_deepliftshap(tiny) -> None:
    model, layer, x = tiny
    torch.manual_seed(5)
    background = torch.randn(4, 3, 8, 8)
    res = cc.DeepSHAPCAM(model, layer, background=background, batch_size=4)(x)  # 2 passes of 1 reference
    split, a, t = _maps(model, layer, x)
    with torch.no_grad():
        refs = split.body(background)
    head = copy.deepcopy(split.head)
    theirs = DeepLiftShap(head).attribute(a.clone(), baselines=refs, target=t).detach().sum(dim=(2, 3))
    torch.testing.assert_close(res.alpha, theirs, rtol=1e-4, atol=1e-6)
    gap = split.head(a).gather(1, t[:, None])[:, 0] - split.head(refs)[:, t].mean(0)  # local accuracy
    torch.testing.assert_close(res.alpha.sum(1), gap.detach(), rtol=1e-4, atol=1e-5)


def test_deepshap_cam_with_the_zero_reference_is_lift_cam(tiny) -> None:
    model, layer, x = tiny
    torch.testing.assert_close(cc.DeepSHAPCAM(model, layer)(x).alpha, cc.LiftCAM(model, layer)(x).alpha)


def test_deepshap_cam_rejects_background_of_another_size(tiny) -> None:
    model, layer, x = tiny
    with pytest.raises(ValueError, match="same size"):
        cc.DeepSHAPCAM(model, layer, background=torch.randn(2, 3, 16, 16))(x)
    with pytest.raises(ValueError, match="background must be"):
        cc.DeepSHAPCAM(model, layer, background=torch.randn(3, 8, 8))


# ---- all four ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["LRP-CAM", "LIME-CAM", "DeepSHAP-CAM", "KernelSHAP-CAM"])
def test_supplement_methods_registered_batched_deterministic(tiny, name) -> None:
    model, layer, x = tiny
    cls = cc.METHODS[name]
    assert cls.name == name and name in cc.SUPPLEMENT_METHODS
    flags = [m.training for m in model.modules()]
    batch = cls(model, layer)(x)
    again = cls(model, layer)(x)
    torch.testing.assert_close(batch.alpha, again.alpha, rtol=0, atol=0)
    loop = torch.cat([cls(model, layer)(x[i : i + 1]).alpha for i in range(x.shape[0])])
    torch.testing.assert_close(batch.alpha, loop, rtol=1e-4, atol=1e-6)
    assert [m.training for m in model.modules()] == flags
    assert torch.isfinite(cls(model, layer)(torch.zeros(1, 3, 8, 8)).saliency).all()
    assert cc.get_method(name.lower().replace("-", ""), model, layer).name == name


@pytest.mark.parametrize(("arch", "layer"), [("vgg16", "features.29"), ("resnet50", "layer4")])
def test_every_method_builds_with_defaults_on_torchvision(arch, layer) -> None:
    """bench/run.py loops over cc.METHODS with default constructors on VGG16 and ResNet50."""
    model = getattr(torchvision.models, arch)(weights=None)
    for name, cls in cc.METHODS.items():
        if name == "CAM" and arch == "vgg16":
            continue  # CAM is only defined for GAP + Linear heads (it says so when called)
        assert cls(model, layer).name == name


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "layer"), [("vgg16", "features.29"), ("resnet50", "layer4")])
def test_supplement_methods_run_with_defaults_on_torchvision(arch, layer) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    for name in cc.SUPPLEMENT_METHODS:
        res = cc.METHODS[name](model, layer)(x)
        assert torch.isfinite(res.alpha).all() and torch.isfinite(res.saliency).all()
