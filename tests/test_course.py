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

from cam_core import cli
from cam_core.book import course

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


# ---- release and grade, as an instructor -----------------------------------------------------------
# Two course copies graded at the same time (each has its own gradebook): the instructor's notebooks in
# one; in the other, after the release, the student versions and the faulty submissions.
def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cam_core", "course", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _edit(src: Path, dst: Path, grade_id: str, old: str, new: str) -> Path:
    nb = nbformat.read(src, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert old in cell.source, (grade_id, old)
    cell.source = cell.source.replace(old, new)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


#: seconds per cell for the student submissions (one of them loops)
TIMEOUT = 30


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("course")
    for copy in ("course_a", "course_b"):
        shutil.copytree(COURSE / "source", tmp / copy / "source")
        shutil.copy(COURSE / "nbgrader_config.py", tmp / copy)
    for d in ("home", "tmp"):
        (tmp / d).mkdir()
    env = {**os.environ, "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    sub = tmp / "submissions"
    (sub / "instructor").mkdir(parents=True)
    instructor = [Path(shutil.copy(COURSE / "source" / a / f"{a}.ipynb", sub / "instructor"))
                  for a in ASSIGNMENTS]
    full = _cli(["grade", "--course", str(tmp / "course_a"), "--json", *map(str, instructor)], env, tmp)
    released = _wait(_cli(["release", "--course", str(tmp / "course_b"), "--out", str(tmp / "release")],
                          env, tmp))

    unanswered = [tmp / "release" / a / f"{a}.ipynb" for a in ASSIGNMENTS]
    wrong = _edit(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", sub / "wrong" / "a1_gradcam.ipynb",
                  "gradcam_alpha", "return G.mean(dim=(2, 3))", "return G.sum(dim=(2, 3))")
    broken = sub / "broken"
    broken.mkdir()
    (broken / "a2_deeplift.ipynb").write_text('{"cells": [ this is not json')
    _edit(COURSE / "source/a3_shapley/a3_shapley.ipynb", broken / "a3_shapley.ipynb",
          "coalition_value", "    ### BEGIN SOLUTION\n",
          "    ### BEGIN SOLUTION\n    raise RuntimeError('boom')\n")
    _edit(COURSE / "source/a4_faithfulness/a4_faithfulness.ipynb", broken / "a4_faithfulness.ipynb",
          "target_softmax", "def target_softmax",
          "import time\nwhile True:\n    time.sleep(0.1)\n\n\ndef target_softmax")
    student = []
    if released.returncode == 0:
        student = [*unanswered, wrong, *sorted(broken.glob("*.ipynb"))]
        student = _wait(_cli(["grade", "--course", str(tmp / "course_b"), "--json", "--timeout", str(TIMEOUT),
                              *map(str, student)], env, tmp))
    return {"tmp": tmp, "released": released, "full": _wait(full), "student": student,
            "instructor": instructor, "unanswered": unanswered, "wrong": wrong, "broken": broken}


def _by_notebook(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for row in rows:
        assert set(row) == {"notebook", "assignment", "score", "max_score"}
    return {row["notebook"]: row for row in rows}


def test_release_strips_solutions_and_hidden_tests(run):
    assert run["released"].returncode == 0, run["released"].stderr[-3000:]
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
    rows = _by_notebook(run["full"])
    for path in run["instructor"]:
        row = rows[str(path)]
        assert row["max_score"] > 0 and row["score"] == row["max_score"], (row, run["full"].stderr[-3000:])


def test_released_unanswered_notebooks_get_zero(run):
    rows = _by_notebook(run["student"])
    for path in run["unanswered"]:
        row = rows[str(path)]
        assert row["assignment"] == path.stem and row["max_score"] > 0 and row["score"] == 0, row
    assert "NotImplementedError" in run["student"].stderr


def test_a_wrong_answer_gets_partial_marks(run):
    row = _by_notebook(run["student"])[str(run["wrong"])]
    assert 0 < row["score"] < row["max_score"], row
    assert row["score"] == row["max_score"] - 2  # only Grad-CAM's test (2 points) fails
    assert "test_gradcam (2 points) failed" in run["student"].stderr


def test_scores_are_recorded_in_the_gradebook(run):
    from nbgrader.api import Gradebook

    rows = _by_notebook(run["student"])
    with Gradebook(f"sqlite:///{run['tmp'] / 'course_b' / 'gradebook.db'}", "cam_core") as gb:
        nb = gb.find_submission_notebook("a1_gradcam", "a1_gradcam", "wrong")
        assert nb.score == rows[str(run["wrong"])]["score"] < nb.max_score
        assert gb.find_submission_notebook("a3_shapley", "a3_shapley", "broken").score == rows[
            str(run["broken"] / "a3_shapley.ipynb")]["score"]
    with Gradebook(f"sqlite:///{run['tmp'] / 'course_a' / 'gradebook.db'}", "cam_core") as gb:
        for a in ASSIGNMENTS:
            nb = gb.find_submission_notebook(a, a, "instructor")
            assert nb.score == nb.max_score > 0


def test_malformed_raising_and_looping_submissions_do_not_crash_the_grader(run):
    rows = {Path(k).stem: v for k, v in _by_notebook(run["student"]).items()
            if Path(k).parent == run["broken"]}
    err = run["student"].stderr
    assert rows["a2_deeplift"]["score"] == 0 and rows["a2_deeplift"]["max_score"] > 0
    assert "a2_deeplift.ipynb: 0 points on every test: not a valid notebook" in err
    # raising in one function: the tests that call it fail, the others pass
    assert 0 < rows["a3_shapley"]["score"] < rows["a3_shapley"]["max_score"], rows["a3_shapley"]
    assert "RuntimeError: boom" in err
    # a loop at the top of a cell is interrupted; the tests that needed that cell fail
    assert rows["a4_faithfulness"]["score"] < rows["a4_faithfulness"]["max_score"]
    assert f"ran longer than the limit ({TIMEOUT} s per cell" in err


def test_the_assignment_is_found_from_the_name_or_the_cells(tmp_path):
    known = course.assignments(COURSE)
    renamed = Path(shutil.copy(COURSE / "source/a1_gradcam/a1_gradcam.ipynb",
                               tmp_path / "alice_a1_gradcam.ipynb"))
    assert course._assignment_of(renamed, COURSE, known) == ("a1_gradcam", "a1_gradcam")
    homework = Path(shutil.copy(COURSE / "source/a3_shapley/a3_shapley.ipynb", tmp_path / "homework.ipynb"))
    assert course._assignment_of(homework, COURSE, known) == ("a3_shapley", "a3_shapley")
    (tmp_path / "junk.ipynb").write_text("not json")
    with pytest.raises(course.CourseError, match="cannot tell which assignment"):
        course._assignment_of(tmp_path / "junk.ipynb", COURSE, known)
