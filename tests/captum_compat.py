"""Making torchvision models explainable by Captum's DeepLift, for the tests that use it as an oracle."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def split_block_relus(model: nn.Module) -> nn.Module:
    """A copy whose BasicBlocks use two distinct ReLU modules: Captum's DeepLift keeps one input per
    module, so it cannot handle torchvision's ``self.relu`` reused twice in a block (ours can)."""
    model = copy.deepcopy(model)

    def forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)

    for block in model.modules():
        if isinstance(block, BasicBlock):
            block.relu2 = nn.ReLU(inplace=True)
            block.forward = forward.__get__(block)
    return model
