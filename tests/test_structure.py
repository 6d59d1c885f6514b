"""The package's layering and its one-of-each helpers: names, targets, Sequential chains."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cam_core as cc
from cam_core.model.layers import sequential_leaves
from cam_core.model.targets import as_target
from cam_core.names import lookup


@pytest.mark.parametrize("module", ["cam_core.kernels.rescale", "cam_core.kernels.shapley",
                                    "cam_core.metrics"])
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


# ---- the package layers (cam_core/ARCHITECTURE.md) ------------------------------------------------
#: lowest first; a module may import its own layer and the layers before it, never one after it
LAYERS = ("base", "model", "kernels", "metrics", "methods", "benchmarks", "evaluation", "vqa", "book", "cli")
#: the top-level modules of each layer that is not a subpackage
TOP_LEVEL = {"runtime": "base", "names": "base", "plotting": "base", "cli": "cli", "__main__": "cli"}
PACKAGE_ROOT = Path(cc.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    root = PACKAGE_ROOT.parent
    return (root / rel.with_suffix(".py")).is_file() or (root / rel / "__init__.py").is_file()


def _imports(path: Path, name: str) -> set[str]:
    """Every cam_core module that module ``name`` (at ``path``) imports, at the top or inside a function:
    ``from pkg import mod`` counts as ``pkg.mod``; ``from cam_core import X`` for X not a module (the lazy
    facade) is an error."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "cam_core"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cam_core":
                continue
            for alias in node.names:
                if _is_module(f"{target}.{alias.name}"):
                    out.add(f"{target}.{alias.name}")
                elif target == "cam_core" and alias.name != "__version__":
                    raise AssertionError(f"{name} imports {alias.name!r} through the cam_core facade: import "
                                         f"it from its module (see cam_core/ARCHITECTURE.md)")
                else:
                    out.add(target)
    return out - {name}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the lazy facade cam_core/__init__.py: imports nothing when imported
    if parts[1] in TOP_LEVEL:
        return TOP_LEVEL[parts[1]]
    assert parts[1] in LAYERS, f"{module}: a new top-level module or package needs a layer in LAYERS"
    return parts[1]


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _upward(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, deps in graph.items():
        here = _layer(module)
        for dep in deps:
            there = _layer(dep)
            if here is not None and there is not None and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{module} ({here}) imports {dep} ({there})")
    return sorted(upward)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = _upward(_graph())
    assert not upward, "upward imports (layer order " + " < ".join(LAYERS) + "):\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_packages_or_modules():
    graph = _graph()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        if _layer(module) is None:
            continue
        packages.setdefault(_layer(module), set()).update(
            d for d in (_layer(dep) for dep in deps) if d is not None and d != _layer(module))
    assert _cycle(packages) is None, f"import circle between packages: {' -> '.join(_cycle(packages))}"
    assert _cycle(graph) is None, f"import circle between modules: {' -> '.join(_cycle(graph))}"


def test_the_checks_see_an_upward_import_a_facade_import_and_a_circle(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from cam_core.evaluation import statistics\n\ndef f():\n    from . import split\n")
    deps = _imports(probe, "cam_core.model.probe")
    assert deps == {"cam_core.evaluation.statistics", "cam_core.model.split"}
    assert _upward({"cam_core.model.probe": deps}) == [
        "cam_core.model.probe (model) imports cam_core.evaluation.statistics (evaluation)"]
    probe.write_text("from cam_core import statistics\n")  # reachable through the facade, but hides the layer
    with pytest.raises(AssertionError, match="through the cam_core facade"):
        _imports(probe, "cam_core.model.probe")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_runner_reads_as_its_steps():
    """cc.evaluate is validate, plan, run (serial or an executor, through one batch function below both),
    collect: no function of the runner over 60 lines of code (its docstring aside)."""
    source = (PACKAGE_ROOT / "evaluation" / "runner.py").read_text()
    long = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0]
            doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str)
            lines = node.end_lineno - node.lineno + 1 - ((first.end_lineno - first.lineno + 1) if doc else 0)
            if lines > 60:
                long[node.name] = lines
    assert long == {}
    from cam_core.evaluation import batches, ray_executor, runner

    assert runner._run_batch is batches._run_batch and ray_executor._run_batch is batches._run_batch
