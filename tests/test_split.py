"""split_model: head(body(x)) == model(x) on torchvision VGG / ResNet and Sequentials; model untouched."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cam_core as cc

# (architecture, layers to split at); 32 px inputs keep the bodies cheap
VGG_CASES = [
    ("vgg11", ["features.10", "features.20"]),  # last ReLU of vgg11 is features.19, last pool features.20
    ("vgg16_bn", ["features.14", "features.42"]),  # features.42: the last ReLU of vgg16_bn
]
# the same code path for the other depths; each VGG takes ~1 s just to initialise its 100M-weight classifier
VGG_SLOW = [("vgg11_bn", ["features.27"]), ("vgg13", ["features.23"]), ("vgg13_bn", ["features.32"]),
            ("vgg16", ["features.29"]), ("vgg19", ["features.35"]), ("vgg19_bn", ["features.51"])]
RESNET_LAYERS = ["layer2", "layer3", "layer4.0", "layer4", "layer3.1"]


def _check_split(model: nn.Module, layer: str, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        expected = model(x)
        body, head = cc.split_model(model, layer)
        a = body(x)
        got = head(a)
    assert a.dim() == 4
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None, num_classes=10)


@pytest.mark.parametrize(("arch", "layers"), VGG_CASES)
def test_vgg_head_of_body_is_model(arch: str, layers: list[str]) -> None:
    model = _build(arch)
    x = torch.randn(2, 3, 32, 32)
    for layer in layers:
        _check_split(model, layer, x)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "layers"), VGG_SLOW)
def test_vgg_other_variants(arch: str, layers: list[str]) -> None:
    model = _build(arch)
    for layer in layers:
        _check_split(model, layer, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", pytest.param("resnet34", marks=pytest.mark.slow),
                                  pytest.param("resnet101", marks=pytest.mark.slow)])
def test_resnet_head_of_body_is_model(arch: str) -> None:
    model = _build(arch)
    x = torch.randn(2, 3, 32, 32)
    for layer in RESNET_LAYERS:
        _check_split(model, layer, x)
    # the BN of a block must use running statistics: a batch of one gives the same row
    _check_split(model, "layer4", x[:1])


@pytest.mark.slow
def test_resnet152() -> None:
    _check_split(_build("resnet152"), "layer4.2", torch.randn(1, 3, 32, 32))


def test_split_at_a_module_object_equals_split_by_name() -> None:
    model = _build("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    body_a, _ = cc.split_model(model, "layer4")
    body_b, _ = cc.split_model(model, model.layer4)
    torch.testing.assert_close(body_a(x), body_b(x))


def test_nested_sequential() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(inplace=True)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    x = torch.randn(3, 3, 9, 9)
    for layer in ["0", "1", "1.1", "1.2", "2"]:
        _check_split(model, layer, x)


def test_split_shares_parameters_not_copies() -> None:
    model = _build("resnet18")
    body, head = cc.split_model(model, "layer3")
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in body.parameters()} | {id(p) for p in head.parameters()} == ids


class _Branchy(nn.Module):
    """A model whose forward is not a chain of its children (two branches added)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((self.a(x) + self.b(x)).mean(dim=(2, 3)))


def test_unsplittable_model_says_how_to_pass_a_split() -> None:
    with pytest.raises(ValueError, match=r"split=\(body, head\)"):
        cc.split_model(_Branchy(), "a")


def test_last_layer_has_no_head() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="last layer"):
        cc.split_model(model, "1")


def test_wrong_layer_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"Did you mean: layer4.*Valid names:.*layer3"):
        cc.split_model(_build("resnet18"), "layer44")


def test_user_model_unchanged() -> None:
    model = _build("resnet18")
    model.train()
    model.layer2.eval()  # a mixed state must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {name: m.training for name, m in model.named_modules()}
    cc.split_model(model, "layer4")
    assert {name: m.training for name, m in model.named_modules()} == flags
    for method in (cc.GradCAM, cc.AblationCAM):
        res = method(model, "layer4", batch_size=256)(torch.randn(2, 3, 32, 32))
        assert res.alpha.shape == (2, 512)
    for k, v in model.state_dict().items():  # BN running statistics would move if run in train mode
        torch.testing.assert_close(v, before[k], msg=f"{k} changed")
    assert {name: m.training for name, m in model.named_modules()} == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_chain_text_names_a_head_shortly() -> None:
    """A head as a table cell shows it: the leaf modules in order, value-preserving ones left out."""
    from torch import nn

    from cam_core.model.layers import chain_text

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(4, 2))
    assert chain_text(head) == "GAP→FC"
    assert chain_text(nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))) \
        == "avg-pool→FC→ReLU→FC"
