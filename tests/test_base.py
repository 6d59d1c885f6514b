"""BaseCAM and every method on tiny nets: batched == per-image, tile layout, no NaN, no leaks, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cam_core as cc
from cam_core.methods.base import BaseCAM

N_CLASSES = 5


class Conditioned(nn.Module):
    """Scales the logits of row ``b`` by ``context[b % N]``: a bound, per-image context (tile layout)."""

    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("context", context)  # (N, classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(z.shape[0], device=z.device) % self.context.shape[0]
        return z * self.context[idx]


class Boom(nn.Module):
    """Raises when armed (and the batch has more than ``above`` rows): a head that fails mid-call."""

    def __init__(self, above: int = 0) -> None:
        super().__init__()
        self.above = above
        self.armed = False
        self.max_rows = 0  # the largest batch seen while not armed

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.armed:
            self.max_rows = max(self.max_rows, z.shape[0])
        if self.armed and z.shape[0] > self.above:
            raise RuntimeError("boom")
        return z


def vgg_like(seed: int = 0, tail: list[nn.Module] | None = None) -> nn.Sequential:
    """Conv blocks, a last max-pool, then FC-ReLU-Dropout-FC (a non-linear head); target layer "4"."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True),  # "4": A is (N, 12, 8, 8) for 16 px
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(32, N_CLASSES), *(tail or []),
    )


def resnet_like(seed: int = 0) -> nn.Sequential:
    """Conv-ReLU, then global-average-pool + one Linear (a linear head); target layer "3"."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(10, N_CLASSES),
    )


def _methods() -> list[str]:
    # SHAP-CAM's estimate depends on how its orderings are drawn per batch: tested in its own file
    # the transformer methods read nn.MultiheadAttention maps: tested on ViTs (test_attention_methods.py)
    return [name for name in cc.METHODS if name not in ("SHAP-CAM", "CAM", *cc.TRANSFORMER_METHODS)]


def _make(name: str, model: nn.Module, layer: str, **kw) -> BaseCAM:
    return cc.get_method(name, model, layer, **kw)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 3, 16, 16)


@pytest.mark.parametrize("name", _methods())
@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_batched_equals_per_image_loop(name: str, arch: str, images: torch.Tensor) -> None:
    model, layer = (vgg_like(), "4") if arch == "vgg" else (resnet_like(), "3")
    batched = _make(name, model, layer, batch_size=7)(images)  # 7 rows: 2 tiles of 3, a partial last chunk
    assert batched.alpha.shape == (3, batched.activations.shape[1])
    assert batched.saliency.shape == (3, 16, 16)
    for i in range(images.shape[0]):
        one = _make(name, model, layer, batch_size=1)(images[i : i + 1])
        torch.testing.assert_close(batched.alpha[i : i + 1], one.alpha, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batched.saliency[i : i + 1], one.saliency, rtol=1e-4, atol=1e-5)
        assert int(one.target) == int(batched.target[i])


@pytest.mark.parametrize("name", ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM"])
def test_tile_layout_with_a_conditioned_model(name: str, images: torch.Tensor) -> None:
    """Perturbed batches keep row b with image b % N: a per-image context gives the per-image answer.

    (LIFT-CAM would need a DeepLIFT rule for the test's ``Conditioned`` module; the VQA tests cover it.)
    """
    torch.manual_seed(2)
    context = torch.rand(3, N_CLASSES) + 0.5  # (N, classes)
    batched = _make(name, vgg_like(tail=[Conditioned(context)]), "4", batch_size=8)(images)
    for i in range(3):
        bound = vgg_like(tail=[Conditioned(context[i : i + 1])])
        one = _make(name, bound, "4")(images[i : i + 1])
        torch.testing.assert_close(batched.alpha[i : i + 1], one.alpha, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", _methods() + ["CAM"])
def test_no_nan_on_constant_image_and_zero_activations(name: str) -> None:
    model = resnet_like()
    for x in (torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 0.7)):
        res = _make(name, model, "3")(x)
        for t in (res.alpha, res.cam, res.saliency):
            assert torch.isfinite(t).all()
        assert ((res.saliency >= 0) & (res.saliency <= 1)).all()
    with torch.no_grad():
        model[2].bias.fill_(-1e4)  # ReLU after it: every activation map is all zero
    res = _make(name, model, "3")(torch.rand(2, 3, 16, 16))
    assert (res.activations == 0).all()
    assert torch.isfinite(res.alpha).all() and (res.saliency == 0).all()


def _leaks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]


@pytest.mark.parametrize("name", _methods())
def test_model_restored_when_the_call_raises(name: str, images: torch.Tensor) -> None:
    # above=0: every call fails; above=len(images): the first forward passes and the call fails exactly
    # when the method feeds the head larger batches of its own (measured in an unarmed call first).
    boom = Boom()
    model = vgg_like(tail=[boom])
    model.train()
    model[0].eval()
    flags = [m.training for m in model.modules()]
    method = _make(name, model, "4", batch_size=64)
    try:
        method(images)
        refuses = False
    except ValueError:  # LIFT-CAM's DeepLIFT refuses the unknown Boom module before running anything
        refuses = True
    assert [m.training for m in model.modules()] == flags and not _leaks(model)
    for above in (0, len(images)):
        boom.armed, boom.above = True, above
        raised = False
        try:
            method(images)
        except (RuntimeError, ValueError):  # LIFT-CAM's DeepLIFT refuses the unknown Boom module first
            raised = True
        assert raised == (refuses or boom.max_rows > above), (above, boom.max_rows)
        assert [m.training for m in model.modules()] == flags
        assert not _leaks(model)


class Branchy(nn.Module):
    """Not a chain (two branches added): cannot be split, so gradients come from a forward hook."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, N_CLASSES)
        self.boom = Boom()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.boom(self.fc(torch.relu(self.a(x) + self.b(x)).mean(dim=(2, 3))))


def test_hook_path_for_unsplittable_models_removes_its_hook_on_error() -> None:
    model = Branchy().train()
    x = torch.rand(2, 3, 8, 8)
    res = cc.GradCAM(model, "a")(x)  # no split: forward hook
    assert res.alpha.shape == (2, 6) and torch.isfinite(res.saliency).all()
    assert model.training and not _leaks(model)
    model.boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        cc.GradCAM(model, "a")(x)
    assert model.training and all(m.training for m in model.modules()) and not _leaks(model)
    with pytest.raises(ValueError, match="split"):
        cc.AblationCAM(model, "a")  # needs the head


def test_bad_inputs_give_clear_value_errors(images: torch.Tensor) -> None:
    model = vgg_like()
    with pytest.raises(ValueError, match=r"not a layer.*Valid names: 0, 1, 2"):
        cc.GradCAM(model, "features.29")
    cam = cc.GradCAM(model, "4")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cam(images[0])
    with pytest.raises(ValueError, match="empty"):
        cam(images[:0])
    with pytest.raises(ValueError, match="out of range"):
        cam(images, target=N_CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        cam(images, target=torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="shape"):
        cam(images, target=torch.tensor([0, 1]))
    for name in ("Grad-CAM", "Ablation-CAM", "Score-CAM"):
        with pytest.raises(ValueError, match="not 4-D"):
            _make(name, model, "7")(images)  # "7" is the first Linear: (N, 32) activations
    with pytest.raises(ValueError, match="global average pool"):
        cc.CAM(model, "4")(images)
    with pytest.raises(ValueError, match="valid names: CAM, Grad-CAM"):
        cc.get_method("Grad-CAM+++", model, "4")


def test_target_none_int_tensor(images: torch.Tensor) -> None:
    model = vgg_like()
    cam = cc.GradCAM(model, "4")
    res = cam(images)
    torch.testing.assert_close(res.target, model.eval()(images).argmax(1))
    assert res.target.dtype == torch.long
    assert cam(images, target=2).target.tolist() == [2, 2, 2]
    assert cam(images, target=torch.tensor([4, 0, 1])).target.tolist() == [4, 0, 1]
    # the explained class matters: gradients of another logit give other coefficients
    assert not torch.allclose(cam(images, target=0).alpha, cam(images, target=1).alpha)


def test_cam_equals_linear_weight_and_gradcam_times_hw(images: torch.Tensor) -> None:
    model = resnet_like()
    res = cc.CAM(model, "3")(images, target=torch.tensor([1, 3, 4]))
    torch.testing.assert_close(res.alpha, model[7].weight.detach()[[1, 3, 4]])
    grad = cc.GradCAM(model, "3")(images, target=torch.tensor([1, 3, 4]))
    torch.testing.assert_close(res.alpha, grad.alpha * 16 * 16, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.saliency, grad.saliency, rtol=1e-4, atol=1e-5)


def test_registry_names_and_lookup() -> None:
    paper = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM"]
    assert cc.PAPER_METHODS == paper
    for name, cls in cc.METHODS.items():
        assert cls.name == name
    assert isinstance(cc.get_method("gradcam++", resnet_like(), "3"), cc.GradCAMPlusPlus)
    assert cc.get_method("Ablation-CAM", resnet_like(), "3", batch_size=5).batch_size == 5


class Opaque(nn.Module):
    """Wraps a head so that it is not a Sequential: the methods must take their generic path."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(a)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_ablation_first_linear_shortcut_equals_evaluating_the_head(arch: str, images: torch.Tensor) -> None:
    model, layer = (vgg_like(), "4") if arch == "vgg" else (resnet_like(), "3")
    body, head = cc.split_model(model, layer)
    fast = cc.AblationCAM(model, layer, batch_size=8)(images)
    generic = cc.AblationCAM(model, layer, split=(body, Opaque(head)), batch_size=8)(images)
    torch.testing.assert_close(fast.alpha, generic.alpha, rtol=1e-4, atol=1e-6)
    # and against Eq. 9 written out for one map (the head in eval mode: no dropout)
    head.eval()
    a, k = fast.activations.clone(), 5
    full = head(a).gather(1, fast.target[:, None])[:, 0]
    a[:, k] = 0
    dropped = head(a).gather(1, fast.target[:, None])[:, 0]
    torch.testing.assert_close(fast.alpha[:, k], (full - dropped) / full, rtol=1e-4, atol=1e-6)


class ViewFlatten(nn.Module):
    """``x.view(N, -1)``: fails on a channels-last conv output, as hand-written models often do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1)


def test_score_cam_channels_last_batches_fall_back_for_view_models(images: torch.Tensor) -> None:
    """Score-CAM feeds its masked batches channels-last on the CPU (faster); a model that cannot take
    them gets them contiguous, with the same coefficients as the same model written with nn.Flatten."""
    plain = vgg_like()
    viewing = vgg_like()
    viewing[6] = ViewFlatten()
    with pytest.raises(RuntimeError, match="view"):
        viewing(images.contiguous(memory_format=torch.channels_last))
    ours = cc.ScoreCAM(viewing, "4", batch_size=8)(images)
    reference = cc.ScoreCAM(plain, "4", batch_size=8)(images)
    torch.testing.assert_close(ours.alpha, reference.alpha, rtol=1e-5, atol=1e-7)
