"""The command line without papercuts (issue 23): every bad parameter of ``book``, ``evaluate``, ``train``
is refused before any work starts, in one line naming the valid values (no traceback); papermill can
read every chapter's parameters; the kernels we start do not warn about TCP; ``evaluate`` prints its
summary with intervals and both files' absolute paths; result files are readable like any other file."""
from __future__ import annotations

import ast
import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cam_core import cli
from cam_core.book import build as book
from cam_core.book import chapter
from cam_core.evaluation import results

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob(book.CHAPTER_GLOB))


def _parameters_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell.source


def _one_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ---- papermill reads every chapter's parameters -----------------------------------------------------
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_papermill_help_notebook_lists_every_parameter(path, caplog):
    """``papermill --help-notebook`` (run in-process) names every constant of the parameters cell, and
    papermill logs no "Unable to parse line" (a second ``=`` in a comment hid RAY_ADDRESS from it)."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    names = [t.id for node in ast.parse(_parameters_cell(path)).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    assert names, path
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(papermill, ["--help-notebook", str(path)])
    assert result.exit_code == 0, result.output
    listed = {ln.split(":")[0].strip() for ln in result.output.splitlines()
              if ln.startswith("  ") and ":" in ln}
    assert [n for n in names if n not in listed] == [], result.output
    assert "Unable to parse" not in caplog.text
    assert set(book.declared_parameters(path)) == set(names)


# ---- one line, before any work --------------------------------------------------------------------
@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a benchmark is loaded or a chapter executed (the checks must come first)."""
    from cam_core.benchmarks import base

    def refuse(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(base, "load", refuse)
    monkeypatch.setattr(book, "execute_chapter", refuse)
    monkeypatch.delenv("CAM_CORE_IMAGENET", raising=False)
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("args, expected", [
    (["--device", "tpu"], "--device: unknown device 'tpu'; valid values: auto, cpu, cuda"),
    (["--methods", "Foo-CAM"], "--methods: unknown CAM method 'Foo-CAM'; valid names: CAM, Grad-CAM"),
    (["--benchmark", "nosuch"], "--benchmark: unknown benchmark 'nosuch'; valid names: "),
    (["--metrics", "XYZ"], "--metrics: unknown metric 'XYZ'; valid names: IC, AD, ADD"),
    (["--method-kwargs", "{bad"], "--method-kwargs: not JSON"),
    (["--ray-address", "auto"], "add --executor ray"),
])
def test_evaluate_refuses_bad_arguments_in_one_line(no_loading, args, expected):
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", *args, "--no-progress"])
    line = _one_line(stop.value.code)
    assert line.startswith("evaluate: ") and expected in line, line


@pytest.mark.parametrize("args, expected", [
    (["--device", "tpu"], "unknown device 'tpu'; valid values: auto, cpu, cuda"),
    (["-p", "BENCHMARK", "nosuch"], "BENCHMARK='nosuch' is not valid; valid values: "),
    (["-p", "N_IMAGES", "100000"], "N_IMAGES=100000, but shapes-single holds 2048 images"),
    (["-p", "BENCHMARK", "imagenet"], "BENCHMARK imagenet reads a dataset folder, but DATA_DIR is None"),
    (["-p", "BENCHMARK", "imagenet", "-p", "DATA_DIR", "/no/such/folder"], "does not exist"),
    (["-p", "ARCH", "alexnet"], "ARCH='alexnet' is not valid; valid values: vgg, resnet, vit"),
    (["-p", "EXECUTOR", "dask"], "EXECUTOR='dask' is not valid; valid values: serial, ray"),
    (["-p", "DEVICE", "tpu"], "unknown device 'tpu'"),
])
def test_book_refuses_bad_parameters_before_any_chapter_runs(no_loading, tmp_path, capsys, args, expected):
    build = tmp_path / "build"
    assert cli.main(["book", *args, "--build-dir", str(build), "--no-html"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("book: ") and expected in line, line
    assert not build.exists()


def test_the_readme_ray_command_passes_the_checks(no_loading, tmp_path, monkeypatch, capsys):
    """``book --only 04 -p EXECUTOR ray -p RAY_ADDRESS auto`` gets as far as running the chapter."""
    seen = {}

    def fake_execute(c, output, params, **kw):
        seen[c.name] = params
        raise book.BookError("stop here")

    monkeypatch.setattr(book, "execute_chapter", fake_execute)
    args = ["book", "--only", "04", "-p", "EXECUTOR", "ray", "-p", "RAY_ADDRESS", "auto", "--build-dir",
            str(tmp_path / "b"), "--no-html"]
    assert cli.main(args) == 1 and "stop here" in capsys.readouterr().err
    assert seen["04_faithfulness"]["RAY_ADDRESS"] == "auto" and seen["04_faithfulness"]["EXECUTOR"] == "ray"


@pytest.mark.parametrize("args, expected", [
    (["--all", "--device", "tpu"], "train: --device: unknown device 'tpu'"),
    (["--all", "--jobs", "0"], "train: --jobs must be a positive integer"),
    (["--all", "--data-dir", "/no/such/folder"], "train: --data-dir: data_dir '/no/such/folder' does not"),
])
def test_train_refuses_bad_arguments_in_one_line(args, expected):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", *args])
    assert expected in _one_line(stop.value.code)


def test_a_value_error_reaching_the_command_line_is_one_line(monkeypatch, capsys):
    """A bad input found after the checks (e.g. in a dataset's files) is one line too, unless asked for."""
    def broken(args):
        raise ValueError("the box file is malformed; expected ...")

    from cam_core.evaluation import runner

    monkeypatch.setattr(runner, "_main", broken)  # what `evaluate` runs once its arguments are checked
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    assert cli.main(["evaluate"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("evaluate: the box file is malformed")
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="malformed"):
        cli.main(["evaluate"])


# ---- what the commands print and write ------------------------------------------------------------
def test_evaluate_prints_the_summary_with_intervals_and_absolute_paths(tmp_path, monkeypatch, capsys):
    import pandas as pd
    import test_evaluation

    from cam_core.benchmarks import base

    monkeypatch.setitem(base._REGISTRY, "fake-test", base._Entry("test_evaluation:_make_fake", "test"))
    assert test_evaluation._make_fake
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        rc = cli.main(["evaluate", "--benchmark", "fake-test", "--methods", "Grad-CAM", "--metrics", "IC",
                       "energy", "--n-images", "4", "--out", "x.csv", "--device", "cpu", "--cache", "none",
                       "--no-progress"])
    finally:
        os.umask(old)
    assert rc == 0
    printed = capsys.readouterr().out
    out, summary = tmp_path / "x.csv", tmp_path / "x.summary.csv"
    assert f"per-image values: {out}" in printed and f"summary: {summary}" in printed
    table = pd.read_csv(summary)
    assert {"method", "metric", "mean", "ci_low", "ci_high", "n"} <= set(table.columns)
    energy = table[table["metric"] == "energy"].iloc[0]
    assert f"{energy['mean']:.4g} [{energy['ci_low']:.4g}, {energy['ci_high']:.4g}]" in printed
    for path in (out, summary):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_files_get_the_mode_of_any_new_file(tmp_path, monkeypatch, mask, mode):
    monkeypatch.setenv(results.ENV_VAR, str(tmp_path))
    old = os.umask(mask)
    try:
        paths = [results.save("t", {"a": 1}), results.write_text(tmp_path / "x.txt", "x")]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p, oct(p.stat().st_mode))


def test_pages_never_show_a_machines_path(tmp_path):
    assert chapter.shown_path(REPO / "results") == "results"
    assert chapter.shown_path("results") == "results"
    shown = chapter.shown_path(tmp_path / "book" / "results")
    assert shown == os.path.join("…", "book", "results") and str(tmp_path) not in shown


def test_an_empty_note_shows_nothing(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    chapter.show("")
    chapter.show("  \n")
    assert shown == []
    chapter.show("> **Warning**")
    assert [o.data for o in shown] == ["> **Warning**"]


# ---- no warning noise from the kernels we start ---------------------------------------------------
def test_kernels_run_over_unix_sockets_in_a_private_folder():
    with book.kernel_config() as config:
        if os.name == "posix":
            assert config.KernelManager.transport == "ipc"
            folder = Path(config.KernelManager.ip).parent
            assert folder.is_dir() and folder.stat().st_mode & 0o077 == 0  # nobody else can reach the sockets
    if os.name == "posix":
        assert not folder.exists()  # removed afterwards


@pytest.mark.notebooks
def test_an_executed_notebook_prints_no_tcp_warning(tmp_path, capfd):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell("X = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(X + 1)")]
    source = tmp_path / "01_tiny.ipynb"
    nbformat.write(nb, source)
    out = tmp_path / "out.ipynb"
    here = tmp_path / "here"  # the folder the build is started from: no socket files are left in it
    here.mkdir()
    with book.this_python_kernel(tmp_path), contextlib.chdir(here):
        book.execute_chapter(book.Chapter("01", "01_tiny", source), out, {"X": 2}, cwd=tmp_path,
                             progress=False)
    assert nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"] == "3\n"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
    assert list(here.iterdir()) == [], "the kernel left files where the build was started"


# ---- make lab in an existing environment ----------------------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_lab_installs_nothing_into_an_environment_that_has_what_it_needs():
    """``make lab VENV=<this environment>`` (dry run) neither installs torch nor anything else."""
    pytest.importorskip("jupyterlab")
    pytest.importorskip("nbgrader")
    proc = subprocess.run(["make", "-n", "lab", f"VENV={sys.prefix}"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install" not in proc.stdout and "jupyter lab" in proc.stdout


def test_a_submission_without_cell_ids_is_read_without_nbformat_warnings(tmp_path):
    import json
    import warnings

    from cam_core.book.course import _readable

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    raw = json.loads(nbformat.writes(nb))
    for cell in raw["cells"]:
        cell.pop("id")
    path = tmp_path / "a1_gradcam.ipynb"
    path.write_text(json.dumps(raw))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        read, why = _readable(path)
    assert why is None and read.cells[0].get("id")
    assert [str(w.message)[:60] for w in seen if "id field" in str(w.message)] == []


@pytest.mark.parametrize("args, expected", [
    (["train", "--benchmark", "nosuch"], "invalid choice: 'nosuch' (choose from 'shapes-single'"),
    (["evaluate", "--n-images", "x"], "must be a positive integer, got 'x'"),
    (["course", "grade"], "the following arguments are required"),
    (["explain"], "the following arguments are required: images"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_argument_errors_are_one_line_not_a_usage_block(args, expected, capsys):
    """argparse's own errors (a bad choice, a bad type, a missing argument), in every command and sub-command:
    one line naming the problem and pointing to --help, exit status 2, nothing run."""
    with pytest.raises(SystemExit) as stop:
        cli.main(args)
    assert stop.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert expected in line and line.endswith("--help`"), line
