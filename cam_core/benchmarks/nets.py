"""The embedded benchmark's small CNNs: a VGG-style net (non-linear head) and a ResNet-style net
(linear head), both ``nn.Sequential`` so that :func:`cam_core.split_model` splits them anywhere.

- :class:`ShapesVGG` mirrors VGG16 (torchvision's ``vgg16_bn``): conv-BN-ReLU blocks with
  max-pool; the explained layer is the last conv block's ReLU (``features.14``, K = 128 maps of
  8 x 8 at 64 px); then, as VGG16's last pool and flatten, a small spatial pool (4 x 4 average:
  a 2 x 2 grid of positions) flattened into FC-ReLU-Dropout-FC-ReLU-FC. Each region of every
  map reaches the head through its own weights, as the 7 x 7 = 49 positions of VGG16's last
  maps do, and the average (not max) pool passes every position on, so a map's DeepLIFT
  contribution is spread over all of its active positions. The head ``F`` (Eq. 1) is non-linear.
  The grid is 2 x 2, not VGG16's 7 x 7: a finer grid makes the head learn each position apart,
  and with 4 x 4 positions the model did not leave chance level within the CPU budget of the
  embedded benchmark (12,288 training images, minutes of training).
  (Generator v2's model ended in a *global* max-pool: each map reached the head through one
  position, which misled gradient-, DeepLIFT- and ablation-based coefficients; issue 11.)
- :class:`ShapesResNet` mirrors ResNet: residual blocks (each with its own ReLU modules), the
  explained layer is the last block's output (``layer3``, K = 64 maps of 8 x 8), then global
  average pooling and ONE Linear layer: a linear head, where LIFT-CAM equals the exact SHAP
  values of the maps (the paper's Section 3.3).

Both take input normalised with ImageNet's mean/std (:data:`generator.MEAN`, :data:`generator.STD`).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer

ARCHS: tuple[str, ...] = ("vgg", "resnet")
#: transformers (issue 24), trained on shapes-single only, kept apart from ``ARCHS`` (``train --all``)
TRANSFORMER_ARCHS: tuple[str, ...] = ("vit",)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout)]


class ShapesVGG(nn.Sequential):
    """VGG-style classifier for 64 x 64 images: ``features`` -> ``flatten`` -> ``classifier``.

    Conv-BN-ReLU blocks (as torchvision's ``vgg16_bn``), the first three followed by a 2x max-pool;
    the last block's ReLU is the explained layer, then a 4 x 4 average pool (a 2 x 2 grid) and the
    VGG16 head.
    """

    TARGET_LAYER = "features.14"  # ReLU after the last conv: (N, 128, 8, 8) at 64 px
    MAPS = 128

    def __init__(self, num_classes: int, image_size: int = 64, hidden: int = 128, dropout: float = 0.3):
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (three 2x max-pools and a 4x pool), "
                             f"got {image_size}")
        k = self.MAPS
        features = nn.Sequential(
            *_conv_bn(3, 16), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, S/2, S/2)
            *_conv_bn(16, 32), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, S/4, S/4)
            *_conv_bn(32, 64), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, S/8, S/8)
            *_conv_bn(64, k), nn.ReLU(),  # features.14: the explained maps A, (N, 128, S/8, S/8)
            nn.AvgPool2d(4),  # the small spatial pool (VGG16: to 7 x 7): (N, 128, S/32, S/32)
        )
        flat = k * (image_size // 32) ** 2  # every region has its own weights, as VGG16's 512 x 7 x 7
        classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        super().__init__(OrderedDict(features=features, flatten=nn.Flatten(1), classifier=classifier))


class ResidualBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the two ReLUs are separate modules."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ShapesResNet(nn.Sequential):
    """ResNet-style classifier: ``stem`` -> ``layer1..3`` -> ``pool`` -> ``flatten`` -> ``fc``."""

    TARGET_LAYER = "layer3"  # last residual block: (N, 64, 8, 8) at 64 px
    MAPS = 64

    def __init__(self, num_classes: int, image_size: int = 64):
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (three stride-2 blocks), got {image_size}")
        super().__init__(OrderedDict(
            # (N, 16, S/2, S/2)
            stem=nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                               nn.ReLU()),
            layer1=ResidualBlock(16, 32, stride=2),  # (N, 32, S/4, S/4)
            layer2=ResidualBlock(32, 64, stride=2),  # (N, 64, S/8, S/8)
            layer3=ResidualBlock(64, self.MAPS),  # (N, 64, S/8, S/8): the explained maps A
            pool=nn.AdaptiveAvgPool2d(1),  # (N, 64, 1, 1)
            flatten=nn.Flatten(1),  # (N, 64)
            fc=nn.Linear(self.MAPS, num_classes),  # the linear head
        ))


class ShapesViT(VisionTransformer):
    """A small hybrid ViT (Dosovitskiy et al., ICLR 2021, Sec. 3.1 "hybrid architecture"; torchvision's
    class): the patch embedding is a CNN stem, the ResNet-style model's ``stem``, ``layer1`` and
    ``layer2`` (an 8 x 8 grid of 64-channel features at 64 px) and a 1 x 1 projection to width 32; then a
    class token and 4 transformer blocks of width 32 (K = 32 maps), 4 heads. Trained from the committed
    ResNet-style model's stem (:meth:`load_init`): a plain ViT did not leave chance level within the
    CPU minutes of the embedded benchmark. The explained layer is the token sequence entering the last
    block (``encoder_layer_2``: the head is the last block, the final LayerNorm, the class token and the
    classifier); ``INNER_LAYER`` enters the second block (the head runs three)."""

    TARGET_LAYER = "encoder.layers.encoder_layer_2"
    INNER_LAYER = "encoder.layers.encoder_layer_0"
    MAPS = 32
    STEM = ("stem", "layer1", "layer2")

    def __init__(self, num_classes: int, image_size: int = 64):
        super().__init__(image_size=image_size, patch_size=8, num_layers=4, num_heads=4, hidden_dim=self.MAPS,
                         mlp_dim=2 * self.MAPS, num_classes=num_classes)
        cnn = ShapesResNet(num_classes, image_size)
        self.conv_proj = nn.Sequential(OrderedDict(
            [*((name, getattr(cnn, name)) for name in self.STEM),  # (N, 64, S/8, S/8)
             ("proj", nn.Conv2d(64, self.MAPS, 1))]))  # (N, 32, S/8, S/8): the patch tokens

    def load_init(self, state: dict[str, Tensor]) -> None:
        """Start from a trained ResNet-style model's state dict: its stem, layer1 and layer2."""
        own = {k: v for k, v in state.items() if k.split(".")[0] in self.STEM}
        missing = self.conv_proj.load_state_dict(own, strict=False).missing_keys
        if [k for k in missing if not k.startswith("proj.")]:
            raise ValueError(f"ShapesViT.load_init: the state dict lacks {missing}; pass a ShapesResNet's")


def build(arch: str, num_classes: int, image_size: int = 64) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` ("vgg", "resnet" or "vit")."""
    if arch == "vit":
        return ShapesViT(num_classes, image_size)
    if arch == "vgg":
        return ShapesVGG(num_classes, image_size)
    if arch == "resnet":
        return ShapesResNet(num_classes, image_size)
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS + TRANSFORMER_ARCHS)}")


def target_layer(arch: str) -> str:
    """Dotted name of the explained layer of ``arch``."""
    layers = {"vgg": ShapesVGG.TARGET_LAYER, "resnet": ShapesResNet.TARGET_LAYER,
              "vit": ShapesViT.TARGET_LAYER}
    return layers[arch]


def state_dict_sha256(model: nn.Module | dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and raw bytes, in key order (independent of
    how the file was pickled): two models hash equal iff their parameters are bit-for-bit equal."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
