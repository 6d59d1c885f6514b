"""Every method, the DeepLIFT kernel and the VQA model on CUDA give what they give on the CPU.

Run in float64 so that cuDNN's TF32 convolutions do not blur the comparison. Skipped without a GPU
(``pytest -m cuda`` runs exactly these and the other CUDA checks; ``bench/gpu_check.sh`` runs them).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import cam_core as cc

pytestmark = pytest.mark.cuda  # skipped without a GPU (tests/conftest.py)


@pytest.mark.parametrize("name", [*cc.PAPER_METHODS, "SHAP-CAM", "CAM"])
@pytest.mark.parametrize("arch", ["vgg11", "resnet18"])
def test_method_same_on_cuda_as_on_cpu(name: str, arch: str) -> None:
    if name == "CAM" and arch == "vgg11":
        pytest.skip("CAM needs a GAP + linear head")
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=7)
    layer = "features.19" if arch == "vgg11" else "layer4"
    x = torch.rand(3, 3, 64, 64)
    kwargs = {"n_orderings": 8, "seed": 1} if name == "SHAP-CAM" else {}
    cpu = cc.get_method(name, net.double().eval(), layer, **kwargs)(x.double())
    gpu = cc.get_method(name, net.to("cuda"), layer, **kwargs)(x.double().cuda())
    assert gpu.saliency.device.type == "cuda" and gpu.alpha.device.type == "cuda"
    assert torch.equal(gpu.target.cpu(), cpu.target)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(gpu.saliency.cpu(), cpu.saliency, rtol=1e-6, atol=1e-6)


def test_deeplift_sums_to_delta_on_cuda() -> None:
    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None, num_classes=5).double().eval().cuda()
    body, head = cc.split_model(net, "features.19")
    with torch.no_grad():
        a = body(torch.rand(2, 3, 64, 64, dtype=torch.float64, device="cuda"))
    target = torch.tensor([1, 3], device="cuda")
    contrib, delta = cc.deeplift(head, a, target, return_delta=True)
    assert contrib.device.type == "cuda"
    assert float(delta.abs().max()) < 1e-9


def test_vqa_lift_cam_on_cuda() -> None:
    from cam_core.vqa.model import VQAConfig, VQAModel

    torch.manual_seed(0)
    model = VQAModel(VQAConfig(num_words=12, num_answers=6)).double().eval()
    q = torch.randint(1, 12, (3, 5))
    x = torch.rand(3, 3, 64, 64, dtype=torch.float64)
    cpu = cc.LiftCAM(model.bind(q), model.target_layer)(x)
    model = model.cuda()
    gpu = cc.LiftCAM(model.bind(q), model.target_layer)(x.cuda())
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, rtol=1e-6, atol=1e-8)
