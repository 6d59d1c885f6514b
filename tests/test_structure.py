"""The package's layering and its one-of-each helpers: names, targets, Sequential chains."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import cam_core as cc
from cam_core.layers import sequential_leaves
from cam_core.names import lookup
from cam_core.targets import as_target


@pytest.mark.parametrize("module", ["cam_core.rescale", "cam_core.shapley", "cam_core.metrics"])
def test_low_level_modules_do_not_import_the_methods(module):
    code = f"import sys, {module}; print(any(m.startswith('cam_core.methods') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_method_module_is_registered_without_optional_loading():
    from cam_core.methods.lift import LiftCAM
    from cam_core.methods.shap import ShapCAM

    assert cc.METHODS["LIFT-CAM"] is LiftCAM and cc.METHODS["SHAP-CAM"] is ShapCAM
    assert set(cc.PAPER_METHODS) <= set(cc.METHODS)


def test_lookup_ignores_case_dashes_and_spaces_and_lists_valid_names():
    assert lookup("lift cam", cc.METHODS, "CAM method")[0] == "LIFT-CAM"
    assert lookup("gradcam++", cc.METHODS, "CAM method")[0] == "Grad-CAM++"
    assert lookup("add", ["IC", "AD", "ADD"], "metric") == ("ADD", "ADD")
    assert lookup("ad", ["IC", "AD", "ADD"], "metric") == ("AD", "AD")
    with pytest.raises(ValueError, match="unknown metric 'nope'; valid names: IC, AD, ADD"):
        lookup("nope", ["IC", "AD", "ADD"], "metric")


def test_as_target_shapes_ranges_and_copies():
    assert as_target(2, 3, "cpu").tolist() == [2, 2, 2]
    src = torch.tensor([0, 1])
    out = as_target(src, 2, "cpu")
    out[0] = 5
    assert src.tolist() == [0, 1]  # a fresh tensor, never the caller's
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        as_target(torch.tensor([0, 1]), 3, "cpu")
    with pytest.raises(ValueError, match="out of range"):
        as_target(4, 2, "cpu", num_classes=4)


def test_sequential_leaves_flattens_plain_sequentials_only():
    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    lin, relu, flat = nn.Linear(2, 2), nn.ReLU(), nn.Flatten()
    assert sequential_leaves(nn.Sequential(flat, nn.Sequential(lin, relu))) == [flat, lin, relu]
    custom = Custom(lin, relu)
    assert sequential_leaves(nn.Sequential(flat, custom)) == [flat, custom]


def test_eval_mode_lives_in_runtime_and_restores_flags():
    from cam_core.runtime import eval_mode

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model[1].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training
