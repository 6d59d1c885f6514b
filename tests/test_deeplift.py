"""DeepLIFT-Rescale kernel: hand-worked values, summation-to-delta, reused/in-place ReLUs, no side effects."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from captum_compat import split_block_relus
from torch import nn
from torchvision.models.resnet import BasicBlock

import cam_core as cc
from cam_core.kernels.rescale import LINEAR_MODULES, RULES, deeplift, rescale


def vgg_style_head(k: int = 6) -> nn.Sequential:
    """MaxPool -> AvgPool -> Flatten -> FC-ReLU-Dropout-FC-ReLU-Dropout-FC, in-place ReLUs (torchvision)."""
    return nn.Sequential(
        nn.MaxPool2d(2, 2),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(1),
        nn.Sequential(
            nn.Linear(k * 9, 24), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(24, 24), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(24, 5),
        ),
    )  # fmt: skip


def resnet_style_head(k: int = 8) -> nn.Sequential:
    """Two torchvision BasicBlocks (each calls its ``self.relu`` twice) -> GAP -> Linear."""
    blocks = [BasicBlock(k, k), BasicBlock(k, k)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(k, 5))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics so that eval-mode BN is a real affine map."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


def target_score(head: nn.Module, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return head.eval()(a.clone()).gather(1, t[:, None])[:, 0]


def test_rescale_hand_worked() -> None:
    # F = ReLU(A1 + A2 - 1), A = (2, 1), ref 0: z = 2, z0 = -1, multiplier (2 - 0) / (2 - -1) = 2/3
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
        lin.bias.fill_(-1.0)
    head = nn.Sequential(nn.Flatten(1), lin, nn.ReLU())
    a = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    contrib, delta = deeplift(head, a, 0, return_delta=True)
    assert torch.allclose(contrib.flatten(), torch.tensor([4 / 3, 2 / 3]))
    assert abs(delta.item()) < 1e-6  # 4/3 + 2/3 = F(A) - F(0) = 2 - 0 (gradient * input would give 3)


def test_maxpool_hand_worked_nonzero_reference() -> None:
    # y = max(A) = 3, y0 = max(ref) = 5; m = 5: nothing goes to A's arg-max, y - m = -2 goes to ref's
    # arg-max (0, 0) where z - z0 = 1 - 5 = -4: multiplier 1/2, contribution -2 = F(A) - F(ref).
    head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(1))
    a = torch.tensor([[1.0, 3.0], [2.0, 0.0]]).view(1, 1, 2, 2)
    ref = torch.tensor([[5.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    contrib, delta = deeplift(head, a, 0, reference=ref, return_delta=True)
    assert torch.equal(contrib.flatten(), torch.tensor([-2.0, 0.0, 0.0, 0.0]))
    assert delta.item() == 0.0


@pytest.mark.parametrize("make_head", [vgg_style_head, resnet_style_head])
@pytest.mark.parametrize("zero_reference", [True, False])
def test_summation_to_delta(make_head, zero_reference: bool) -> None:
    torch.manual_seed(0)
    head = randomise_bn(make_head()).double().eval()
    a = torch.rand(3, 6 if make_head is vgg_style_head else 8, 6, 6, dtype=torch.float64)
    ref = None if zero_reference else torch.rand_like(a) * 0.5
    t = torch.tensor([0, 3, 4])
    contrib, delta = deeplift(head, a, t, reference=ref, return_delta=True)
    expected = target_score(head, a, t) - target_score(head, torch.zeros_like(a) if ref is None else ref, t)
    assert contrib.shape == a.shape
    assert torch.allclose(contrib.sum(dim=(1, 2, 3)), expected, atol=1e-10)
    assert delta.abs().max() < 1e-10
    # a non-linear head: DeepLIFT is not gradient * input
    grad_x_input = a * torch.func.grad(lambda x: head(x).gather(1, t[:, None]).sum())(a)
    assert not torch.allclose(grad_x_input, contrib, atol=1e-6)


def test_reused_relu_equals_distinct_relus_and_captum() -> None:
    from captum.attr import DeepLift

    torch.manual_seed(1)
    head = randomise_bn(resnet_style_head()).double().eval()
    distinct = split_block_relus(head)
    a = torch.rand(2, 8, 5, 5, dtype=torch.float64)
    t = torch.tensor([1, 2])
    ours = deeplift(head, a, t)
    ours_distinct = deeplift(distinct, a, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = DeepLift(distinct).attribute(a.clone(), target=t, baselines=torch.zeros_like(a))
    assert torch.allclose(ours, ours_distinct, atol=1e-12)
    assert torch.allclose(ours, captum, atol=1e-12)


def test_vgg_head_matches_captum_with_nonzero_reference() -> None:
    from captum.attr import DeepLift

    torch.manual_seed(2)
    head = vgg_style_head().double().eval()
    a = torch.rand(2, 6, 6, 6, dtype=torch.float64)
    ref = torch.rand_like(a) * 0.5
    t = torch.tensor([4, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = DeepLift(copy.deepcopy(head)).attribute(a.clone(), target=t, baselines=ref)
    assert torch.allclose(deeplift(head, a, t, reference=ref), captum, atol=1e-12)


def test_batch_equals_per_image() -> None:
    torch.manual_seed(3)
    head = vgg_style_head().double()
    a = torch.rand(4, 6, 6, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    batched = deeplift(head, a, t)
    single = torch.cat([deeplift(head, a[i : i + 1], t[i : i + 1]) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-12)


class Conditioned(nn.Module):
    """A head conditioned on one context per image, tile layout: row b uses context b % N."""

    def __init__(self, context: torch.Tensor):
        super().__init__()
        self.context = context  # (N, K)
        k = context.shape[1]
        self.encoder = nn.Sequential(nn.Linear(k, k), nn.Softsign())  # no rule, but A does not reach it
        self.relu = nn.ReLU()
        self.fc = nn.Linear(k, 3)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        ctx = self.encoder(self.context).repeat(a.shape[0] // self.context.shape[0], 1)  # (R*N, K)
        return self.fc(self.relu(a.mean(dim=(2, 3)) * ctx - 0.2))


def test_conditioned_head_uses_tile_layout() -> None:
    torch.manual_seed(4)
    context = torch.randn(3, 5, dtype=torch.float64)
    head = Conditioned(context).double()
    a = torch.rand(3, 5, 2, 2, dtype=torch.float64)
    contrib, delta = deeplift(head, a, 1, return_delta=True)
    for i in range(3):
        one = Conditioned(context[i : i + 1]).double()
        one.load_state_dict(head.state_dict())
        assert torch.allclose(contrib[i : i + 1], deeplift(one, a[i : i + 1], 1), atol=1e-12)
    assert delta.abs().max() < 1e-12
    assert all(p.requires_grad for p in head.parameters())


def test_model_left_unchanged() -> None:
    head = resnet_style_head().train()  # training flags must come back as they were
    head[1].eval()
    head[0].conv1.weight.requires_grad_(False)
    grad_flags = [p.requires_grad for p in head.parameters()]
    before = copy.deepcopy(head.state_dict())
    flags = [m.training for m in head.modules()]
    deeplift(head, torch.rand(2, 8, 4, 4), 0)
    assert [m.training for m in head.modules()] == flags
    assert [p.requires_grad for p in head.parameters()] == grad_flags
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    for m in head.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_unknown_nonlinearity_error_and_rules_argument() -> None:
    head = nn.Sequential(nn.Flatten(1), nn.Linear(4, 3), nn.Softsign(), nn.Linear(3, 2)).double()
    a = torch.rand(2, 4, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Softsign.*register_rule"):
        deeplift(head, a, 0)
    assert all(not m._forward_pre_hooks for m in head.modules())  # removed after the error too
    _, delta = deeplift(head, a, 0, return_delta=True, rules={nn.Softsign: rescale})
    assert delta.abs().max() < 1e-12
    assert nn.Softsign not in RULES and nn.Softsign not in LINEAR_MODULES


def test_package_attribute_is_the_function_in_any_import_order() -> None:
    import cam_core.kernels.rescale  # noqa: F401  the kernel's module has its own name: cc.deeplift stays the function

    head = nn.Sequential(nn.Flatten(1), nn.Linear(2, 2))
    out = cc.deeplift(head, torch.ones(1, 2, 1, 1), 0)
    assert out.shape == (1, 2, 1, 1)


def test_bad_target_shape() -> None:
    head = nn.Sequential(nn.Flatten(1), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="target"):
        deeplift(head, torch.ones(2, 2, 1, 1), torch.tensor([0, 1, 1]))
