"""The course: nbgrader assignments released and graded by ``python -m cam_core course``.

Everything runs on a copy of ``course/`` in a temporary folder (with ``HOME`` and ``TMPDIR`` there
too), through the command line as an instructor would: release every assignment, then grade in one
call the instructor's notebooks (full marks), the released unanswered ones (0, without failing), a
plausible wrong answer (partial marks), and in a second call with a short cell time limit a
malformed, a raising and a looping submission.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cam_core import cli, course

REPO = Path(__file__).resolve().parents[1]
COURSE = REPO / "course"
ASSIGNMENTS = course.assignments(COURSE)


def _nbgrader_cells(nb: nbformat.NotebookNode, key: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(key)]


def _regions(source: str, begin: str, end: str) -> list[str]:
    """The lines between ``### BEGIN X`` and ``### END X`` markers."""
    return re.findall(rf"### {begin}\n(.*?)### {end}", source, flags=re.S)


def _source(name: str) -> nbformat.NotebookNode:
    return nbformat.read(COURSE / "source" / name / f"{name}.ipynb", as_version=4)


# ---- the course's layout (fast) -------------------------------------------------------------------
def test_five_assignments_in_nbgraders_layout():
    assert (COURSE / "nbgrader_config.py").is_file()
    assert len(ASSIGNMENTS) >= 5, ASSIGNMENTS
    for name in ASSIGNMENTS:
        nb = _source(name)
        nbformat.validate(nb)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has outputs"
        solutions = _nbgrader_cells(nb, "solution")
        tests = _nbgrader_cells(nb, "grade")
        assert solutions, name
        assert all(_regions(c.source, "BEGIN SOLUTION", "END SOLUTION") for c in solutions), name
        assert len(tests) >= 3, f"{name}: several graded test cells, so that a wrong answer loses some points"
        for cell in tests:
            assert cell.metadata.nbgrader["points"] > 0
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            assert "assert" in visible, f"{name}/{cell.id}: a visible test a student can run"
            hidden = _regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
            assert hidden, f"{name}/{cell.id}: hidden tests"
        assert "import cam_core as cc" in nb.cells[1].source + nb.cells[2].source


def test_every_chapter_ends_with_its_exercises():
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        last = nbformat.read(path, as_version=4).cells[-1]
        assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), path.name
        named = [a for a in ASSIGNMENTS if a in last.source]
        assert named, f"{path.name}: the Exercises section names no assignment"


def test_grade_refuses_a_notebook_of_no_assignment(tmp_path, capsys):
    stray = tmp_path / "homework.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    assert cli.main(["course", "grade", str(stray), "--course", str(COURSE)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell which assignment" in err and "--assignment" in err
    assert cli.main(["course", "grade", str(tmp_path / "missing.ipynb"), "--course", str(COURSE)]) == 2
    assert "no such notebook" in capsys.readouterr().err
    assert cli.main(["course", "release", "nope", "--course", str(COURSE)]) == 2
    assert "no assignment nope" in capsys.readouterr().err
    assert cli.main(["course", "release", "--course", str(tmp_path)]) == 2
    assert "is not a course folder" in capsys.readouterr().err


def test_student_ids_follow_nbgraders_layout(tmp_path):
    assert course._student_of(tmp_path / "alice" / "a1_gradcam" / "a1_gradcam.ipynb", "a1_gradcam") == "alice"
    assert course._student_of(tmp_path / "bob smith" / "a1_gradcam.ipynb", "a1_gradcam") == "bob_smith"


# ---- release and grade, as an instructor (one release, two grade calls) -------------------------------
def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cam_core", "course", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _edit(src: Path, dst: Path, grade_id: str, old: str, new: str) -> Path:
    nb = nbformat.read(src, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert old in cell.source, (grade_id, old)
    cell.source = cell.source.replace(old, new)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("course")
    work = tmp / "course"
    shutil.copytree(COURSE / "source", work / "source")
    shutil.copy(COURSE / "nbgrader_config.py", work)
    for d in ("home", "tmp"):
        (tmp / d).mkdir()
    env = {**os.environ, "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    released = _cli(["release", "--course", str(work), "--out", str(tmp / "release")], env, tmp)
    assert released.returncode == 0, released.stderr

    sub = tmp / "submissions"
    (sub / "instructor").mkdir(parents=True)
    instructor = [Path(shutil.copy(COURSE / "source" / a / f"{a}.ipynb", sub / "instructor"))
                  for a in ASSIGNMENTS]
    unanswered = [tmp / "release" / a / f"{a}.ipynb" for a in ASSIGNMENTS]
    wrong = _edit(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", sub / "wrong" / "a1_gradcam.ipynb",
                  "gradcam_alpha", "return G.mean(dim=(2, 3))", "return G.sum(dim=(2, 3))")
    graded = _cli(["grade", "--course", str(work), "--json", *map(str, [*instructor, *unanswered, wrong])],
                  env, tmp)

    broken = sub / "broken"
    broken.mkdir()
    (broken / "a2_deeplift.ipynb").write_text('{"cells": [ this is not json')
    _edit(COURSE / "source/a3_shapley/a3_shapley.ipynb", broken / "a3_shapley.ipynb",
          "coalition_value", "    ### BEGIN SOLUTION\n",
          "    ### BEGIN SOLUTION\n    raise RuntimeError('boom')\n")
    _edit(COURSE / "source/a4_faithfulness/a4_faithfulness.ipynb", broken / "a4_faithfulness.ipynb",
          "target_softmax", "def target_softmax", "while True:\n    pass\n\n\ndef target_softmax")
    bad = _cli(["grade", "--course", str(work), "--json", "--timeout", "20",
                *map(str, sorted(broken.glob("*.ipynb")))], env, tmp)
    return {"tmp": tmp, "work": work, "released": released, "graded": graded, "bad": bad,
            "instructor": instructor, "unanswered": unanswered, "wrong": wrong}


def _by_notebook(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for row in rows:
        assert set(row) == {"notebook", "assignment", "score", "max_score"}
    return {row["notebook"]: row for row in rows}


def test_release_strips_solutions_and_hidden_tests(run):
    release = run["tmp"] / "release"
    printed = run["released"].stdout.split()
    assert sorted(Path(p).parent.name for p in printed) == ASSIGNMENTS
    for name in ASSIGNMENTS:
        text = "".join(p.read_text() for p in (release / name).rglob("*") if p.is_file())
        nb = nbformat.read(release / name / f"{name}.ipynb", as_version=4)
        assert "raise NotImplementedError()" in text
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{name}: {marker} left in the released files"
        src = _source(name)
        secret = [r for c in src.cells for r in _regions(c.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
                  + _regions(c.source, "BEGIN SOLUTION", "END SOLUTION")]
        public = "\n".join(c.source for c in src.cells)
        for region in secret:
            public = public.replace(region, "")
        # lines only in solutions / hidden tests (not a `with torch.no_grad():` also given elsewhere)
        hidden = {ln.strip() for region in secret for ln in region.splitlines()
                  if len(ln.strip()) > 12 and ln.strip() not in public}
        released_code = "\n".join(c.source for c in nb.cells)
        leaked = sorted(ln for ln in hidden if ln in released_code)
        assert not leaked, f"{name}: solution / hidden-test lines in the student version: {leaked[:3]}"


def test_source_notebooks_get_full_marks(run):
    rows = _by_notebook(run["graded"])
    for path in run["instructor"]:
        row = rows[str(path)]
        assert row["max_score"] > 0 and row["score"] == row["max_score"], (row, run["graded"].stderr[-3000:])


def test_released_unanswered_notebooks_get_zero(run):
    rows = _by_notebook(run["graded"])
    for path in run["unanswered"]:
        row = rows[str(path)]
        assert row["assignment"] == path.stem and row["max_score"] > 0 and row["score"] == 0, row
    assert "NotImplementedError" in run["graded"].stderr


def test_a_wrong_answer_gets_partial_marks(run):
    row = _by_notebook(run["graded"])[str(run["wrong"])]
    assert 0 < row["score"] < row["max_score"], row
    assert row["score"] == row["max_score"] - 2  # only Grad-CAM's test (2 points) fails
    assert "test_gradcam (2 points) failed" in run["graded"].stderr


def test_scores_are_recorded_in_the_gradebook(run):
    from nbgrader.api import Gradebook

    rows = _by_notebook(run["graded"])
    with Gradebook(f"sqlite:///{run['work'] / 'gradebook.db'}", "cam_core") as gb:
        nb = gb.find_submission_notebook("a1_gradcam", "a1_gradcam", "wrong")
        assert nb.score == rows[str(run["wrong"])]["score"]
        assert gb.find_submission_notebook("a1_gradcam", "a1_gradcam", "instructor").score == nb.max_score


def test_malformed_raising_and_looping_submissions_do_not_crash_the_grader(run):
    rows = {Path(k).stem: v for k, v in _by_notebook(run["bad"]).items()}
    err = run["bad"].stderr
    assert rows["a2_deeplift"]["score"] == 0 and rows["a2_deeplift"]["max_score"] > 0
    assert "a2_deeplift.ipynb: 0 points on every test: not a valid notebook" in err
    # raising in one function: the tests that call it fail, the others pass
    assert 0 < rows["a3_shapley"]["score"] < rows["a3_shapley"]["max_score"], rows["a3_shapley"]
    assert "RuntimeError: boom" in err
    # a loop at the top of a cell is interrupted; the tests that needed that cell fail
    assert rows["a4_faithfulness"]["score"] < rows["a4_faithfulness"]["max_score"]
    assert "ran longer than the limit (20 s per cell" in err
