"""LIFT-CAM and SHAP-CAM as CAM methods: agreement with Captum on torchvision models, Eq. 8."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from captum_compat import split_block_relus
from torch import nn

import cam_core as cc
from cam_core.kernels import shapley
from cam_core.runtime import eval_mode


def captum_deeplift_alpha(model: nn.Module, layer: str, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Captum ``DeepLift`` (zero baseline) on the head of a private copy, summed over space: (N, K)."""
    from captum.attr import DeepLift

    _, head = cc.split_model(model, layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contrib = DeepLift(head).attribute(a.clone(), target=t, baselines=torch.zeros_like(a))
    return contrib.sum(dim=(2, 3)).detach()


def local_accuracy_gap(model: nn.Module, layer: str, res: cc.CAMResult) -> torch.Tensor:
    """``sum_k alpha_k - (F^c(A) - F^c(0))`` per image (Eq. 8)."""
    _, head = cc.split_model(model, layer)
    with torch.no_grad(), eval_mode(head):
        zero = head(torch.zeros_like(res.activations)).gather(1, res.target[:, None])[:, 0]
    full = res.logits.gather(1, res.target[:, None])[:, 0]
    return res.alpha.sum(1) - (full - zero)


@pytest.mark.parametrize(
    ("arch", "layer", "captum_copy"),
    [
        ("vgg16", "features.29", copy.deepcopy),  # non-linear head, in-place ReLUs, max-pool
        ("resnet50", "layer4", copy.deepcopy),  # linear head (GAP + FC)
        ("resnet18", "layer3", split_block_relus),  # layer4 blocks reuse self.relu
    ],
)
def test_lift_cam_equals_captum_deeplift(arch: str, layer: str, captum_copy) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    res = cc.LiftCAM(model, layer)(x, target=torch.tensor([1, 500]))
    expected = captum_deeplift_alpha(captum_copy(model), layer, res.activations, res.target)
    scale = expected.abs().max()
    assert scale > 0
    assert torch.allclose(res.alpha, expected, atol=1e-5 * scale.item(), rtol=1e-4)
    assert local_accuracy_gap(model, layer, res).abs().max() < 1e-4 * res.logits.abs().max()


def small_vgg() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),  # target layer "3": A is (N, 8, 8, 8)
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(1),
        nn.Linear(32, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(inplace=True),
        nn.Linear(16, 4),
    )  # fmt: skip


def small_resnet_like() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                         nn.Linear(8, 4))  # fmt: skip


def test_shap_cam_is_algorithm_1_on_the_head_and_locally_accurate() -> None:
    torch.manual_seed(1)
    model = small_vgg().double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    method = cc.ShapCAM(model, "3", n_orderings=20, seed=4)
    res = method(x)
    _, head = cc.split_model(model, "3")
    assert torch.equal(res.alpha, shapley.permutation(head, res.activations, res.target, 20, seed=4))
    assert local_accuracy_gap(model, "3", res).abs().max() < 1e-12
    assert torch.equal(res.alpha, cc.ShapCAM(model, "3", n_orderings=20, seed=4)(x).alpha)
    assert method.name == "SHAP-CAM" and cc.LiftCAM.name == "LIFT-CAM"
    # with many orderings SHAP-CAM approaches the exact values (K = 8)
    exact = shapley.exact(head, res.activations, res.target)
    far = (res.alpha - exact).abs().max()
    near = (cc.ShapCAM(model, "3", n_orderings=400, seed=4)(x).alpha - exact).abs().max()
    assert near < far


def test_lift_cam_local_accuracy_and_batch_equals_per_image() -> None:
    torch.manual_seed(2)
    model = small_vgg().double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    method = cc.LiftCAM(model, "3")
    res = method(x)
    assert local_accuracy_gap(model, "3", res).abs().max() < 1e-12
    single = torch.cat([method(x[i, None], target=res.target[i, None]).alpha for i in range(3)])
    assert torch.allclose(res.alpha, single, atol=1e-12)


def test_linear_head_lift_cam_equals_shap_cam_equals_exact() -> None:
    torch.manual_seed(3)
    model = small_resnet_like().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    lift = cc.LiftCAM(model, "1")(x)
    shap = cc.ShapCAM(model, "1", n_orderings=2, seed=0)(x)
    _, head = cc.split_model(model, "1")
    exact = shapley.exact(head, lift.activations, lift.target)
    assert torch.allclose(lift.alpha, exact, atol=1e-12)
    assert torch.allclose(shap.alpha, exact, atol=1e-12)


@pytest.mark.parametrize("method", [cc.LiftCAM, lambda m, layer: cc.ShapCAM(m, layer, n_orderings=3)])
def test_model_left_unchanged(method) -> None:
    model = small_vgg().train()
    before = copy.deepcopy(model.state_dict())
    method(model, "3")(torch.randn(2, 3, 8, 8))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_shap_cam_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_orderings"):
        cc.ShapCAM(small_vgg(), "3", n_orderings=0)


@pytest.mark.cuda
def test_shap_cam_same_estimate_on_cpu_and_cuda() -> None:
    torch.manual_seed(5)
    model = small_vgg().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    cpu = cc.ShapCAM(model, "3", n_orderings=30, seed=2)(x).alpha
    cuda = cc.ShapCAM(model.cuda(), "3", n_orderings=30, seed=2)(x.cuda()).alpha
    assert torch.allclose(cpu, cuda.cpu(), atol=1e-10)


@pytest.mark.slow
def test_shap_cam_fast_path_is_faster_than_captum_on_vgg16_head() -> None:
    """Time per ordering on the torchvision VGG16 head, A = 512 x 14 x 14 (224 px): ours vs Captum's
    ``ShapleyValueSampling`` (one feature group per map, 64 perturbations per forward); min over repeats."""
    import time

    from captum.attr import ShapleyValueSampling

    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    body, head = cc.split_model(model, "features.29")
    with torch.no_grad():
        a = body(torch.randn(1, 3, 224, 224))
    t = int(head(a).argmax())
    mask = torch.arange(512).view(1, 512, 1, 1)
    ours, captum = [], []
    for _ in range(2):
        start = time.perf_counter()
        shapley.permutation(head, a, t, 4, seed=0)
        ours.append((time.perf_counter() - start) / 4)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ShapleyValueSampling(head).attribute(a, target=t, feature_mask=mask, n_samples=1,
                                                 perturbations_per_eval=64)  # fmt: skip
        captum.append(time.perf_counter() - start)
    print(f"SHAP-CAM {min(ours):.3f} s/ordering, Captum {min(captum):.3f} s/ordering")
    assert min(captum) / min(ours) >= 5
