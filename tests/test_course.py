"""The course: nbgrader assignments released by ``python -m cam_core course`` and graded so that a
hostile student cannot beat the grader.

Everything runs on copies of ``course/`` in a temporary folder (``HOME`` and ``TMPDIR`` there too),
through the command line in a subprocess whose environment has no ``PYTEST_CURRENT_TEST`` (as an
instructor's shell). Fast: a1 released, then one ``grade`` call with an honest full, an unanswered
and a wrong submission and a battery of hostile ones (each in its own sandbox). Slow: every
assignment released and graded (full marks for each source notebook; malformed, raising, looping
submissions), and the denial-of-service submissions (a loop that ignores interrupts, a fork bomb).
"""

from __future__ import annotations

import hashlib
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
from cam_core.book import course, course_sandbox

REPO = Path(__file__).resolve().parents[1]
COURSE = REPO / "course"
ASSIGNMENTS = course.assignments(COURSE)
HAVE_BWRAP = course_sandbox.bwrap_path() is not None
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed (make installs it as "
                                                         "root: "
                                                         "apt-get install bubblewrap)")


def _nbgrader_cells(nb: nbformat.NotebookNode, key: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(key)]


def _regions(source: str, begin: str, end: str) -> list[str]:
    """The lines between ``### BEGIN X`` and ``### END X`` markers."""
    return re.findall(rf"### {begin}\n(.*?)### {end}", source, flags=re.S)


def _source(name: str) -> nbformat.NotebookNode:
    return nbformat.read(COURSE / "source" / name / f"{name}.ipynb", as_version=4)


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


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


def test_every_graded_test_has_a_probe_that_never_judges():
    """The probes export values; a verdict computed in the student's kernel could be faked."""
    for name in ASSIGNMENTS:
        spec = course._checks(COURSE, name)
        tests = {c.metadata.nbgrader["grade_id"] for c in _nbgrader_cells(_source(name), "grade")}
        assert set(spec["PROBES"]) == tests, name
        for test, probe in spec["PROBES"].items():
            compile(probe, test, "exec")
            assert "export(" in probe and not re.search(r"\b(assert|allclose|equal)\b", probe), (name, test)


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


def test_names_with_path_parts_are_refused(tmp_path, capsys):
    source_before = _tree_hash(COURSE / "source")
    nb = tmp_path / "a1_gradcam.ipynb"
    shutil.copy(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", nb)
    for bad in ("../source", "..", "a/b", "/etc", "", " x", ".hidden"):
        assert cli.main(["course", "grade", str(nb), "--student", bad, "--course", str(COURSE)]) == 2, bad
        assert "invalid student" in capsys.readouterr().err
    assert cli.main(["course", "grade", str(nb), "--assignment", "../source", "--course", str(COURSE)]) == 2
    assert "invalid assignment" in capsys.readouterr().err
    assert cli.main(["course", "release", "../a1_gradcam", "--course", str(COURSE)]) == 2
    assert "invalid assignment" in capsys.readouterr().err
    assert _tree_hash(COURSE / "source") == source_before
    assert course.check_name("student", "alice.smith-2") == "alice.smith-2"


def test_student_ids_follow_nbgraders_layout(tmp_path):
    assert course._student_of(tmp_path / "alice" / "a1_gradcam" / "a1_gradcam.ipynb", "a1_gradcam") == "alice"
    assert course._student_of(tmp_path / "bob smith" / "a1_gradcam.ipynb", "a1_gradcam") == "bob_smith"
    assert course._student_of(tmp_path / ".." / "a1_gradcam.ipynb", "a1_gradcam") == course.check_name(
        "student", course._student_of(tmp_path / ".." / "a1_gradcam.ipynb", "a1_gradcam"))


def test_grading_refuses_to_run_without_bubblewrap(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(course_sandbox, "bwrap_path", lambda: None)
    nb = Path(shutil.copy(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", tmp_path / "a1_gradcam.ipynb"))
    assert cli.main(["course", "grade", str(nb), "--course", str(COURSE)]) == 2
    assert "apt-get install bubblewrap" in capsys.readouterr().err


def test_the_comparison_is_strict_about_shapes_types_and_nan():
    arr = {"__array__": [2], "data": [1.0, 2.0]}
    assert course.compare(arr, arr, 1e-6) == []
    assert course.compare({"__array__": [2], "data": [1.0, 2.0 + 1e-3]}, arr, 1e-6)
    assert course.compare({"__array__": [1, 2], "data": [1.0, 2.0]}, arr, 1e-6)  # shape
    assert course.compare({"__array__": [2], "data": [1.0, float("nan")]}, arr, 1e-6)  # NaN is never close
    assert course.compare({"__array__": [2], "data": [1.0, True]}, arr, 1e-6)  # not numbers
    assert course.compare({"__array__": [3], "data": [1.0, 2.0]}, arr, 1e-6)  # inconsistent
    assert course.compare([1.0, 2.0], arr, 1e-6) and course.compare("1, 2", arr, 1e-6)
    assert course.compare(3.0, 3.0, 0) == []
    assert course.compare(3.0, {"__array__": [], "data": [3.0]}, 0) == []
    assert course.compare({"a": 1.0, "extra": "x"}, {"a": 1.0}, 0) == []  # extra keys allowed
    assert course.compare({"b": 1.0}, {"a": 1.0}, 0)
    assert course.compare(True, 1.0, 0) and course.compare("LIFT-CAM", "LIFT-CAM", 0) == []
    assert course.compare(1.0, True, 0) and course.compare(None, "x", 0)


def test_merge_keeps_released_tests_and_the_students_solutions():
    template = nbformat.read(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", as_version=4)
    student = nbformat.read(COURSE / "source/a1_gradcam/a1_gradcam.ipynb", as_version=4)
    test = next(c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_gradcam")
    test.source = "pass  # the student 'fixed' the test"
    setup = student.cells.pop(1)
    assert setup.metadata.nbgrader.grade_id == "setup"
    solution = next(c for c in student.cells if course._grade_id(c) == "gradcam_alpha")
    solution.source = "def gradcam_alpha(G):\n    return G.sum(dim=(2, 3))"
    student.cells.insert(0, nbformat.v4.new_code_cell("helper = 1"))
    merged = course.merge(template, student)
    by_id = {course._grade_id(c): c for c in merged.cells if course._grade_id(c)}
    assert by_id["test_gradcam"].source == next(
        c for c in template.cells if course._grade_id(c) == "test_gradcam").source
    assert by_id["gradcam_alpha"].source == solution.source
    ids = [course._grade_id(c) for c in merged.cells]
    assert ids.index("setup") < ids.index("target_gradients")  # put back where it was
    (helper,) = [c for c in merged.cells if c.source == "helper = 1"]
    assert "nbgrader" not in helper.metadata


# ---- release and grade through the command line, as an instructor --------------------------------
def _env(tmp: Path) -> dict[str, str]:
    """An instructor's shell: no PYTEST_CURRENT_TEST (it changes what ipykernel prints)."""
    for d in ("home", "tmp"):
        (tmp / d).mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(HOME=str(tmp / "home"), TMPDIR=str(tmp / "tmp"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cam_core", "course", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=3600)


def _course_copy(dst: Path) -> Path:
    shutil.copytree(COURSE / "source", dst / "source")
    shutil.copytree(COURSE / "checks", dst / "checks")
    shutil.copy(COURSE / "nbgrader_config.py", dst)
    return dst


def _edit(src: Path, dst: Path, grade_id: str, old: str, new: str) -> Path:
    nb = nbformat.read(src, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert old in cell.source, (grade_id, old)
    cell.source = cell.source.replace(old, new)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


def _with_cell(src: Path, dst: Path, code: str, at: int = 2) -> Path:
    """``src`` with a code cell ``code`` inserted at ``at`` (after the setup cell)."""
    nb = nbformat.read(src, as_version=4)
    nb.cells.insert(at, nbformat.v4.new_code_cell(code))
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


def _rows(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for row in rows:
        assert {"notebook", "student", "assignment", "score", "max_score", "failed", "messages"} <= set(row)
        assert row["score"] == row["max_score"] - sum(f["points"] for f in row["failed"])
    return {f"{Path(row['notebook']).parent.name}/{Path(row['notebook']).stem}": row for row in rows}


#: what a hostile submission must not see: solution and hidden-test lines of a1, the gradebook's file header,
#: the release record's reference values
SECRETS = ["return G.mean(dim=(2, 3))", "safe = torch.where(total != 0, total, torch.ones_like(total))",
           "assert torch.allclose(G, g_ref, atol=1e-6)", "SQLite format 3", '"reference": {"test_']
DAEMON_MARK = "cam_core_hostile_daemon_7c1f"

# Each hostile cell runs after the released a1's setup; none answers anything (the stubs stay).
HOSTILE = {
    # look everywhere for the course: source, gradebook, other students, the repository, /root
    "reader": r'''
import os
seen = []
for top in ["/", os.path.expanduser("~"), "..", "../..", "../../..", "/root", "/work", "/home",
            COURSE_DIR, REPO_DIR]:
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "site-packages", "lib")]
        for f in files:
            path = os.path.join(root, f)
            try:
                text = open(path, "rb").read(1 << 20).decode("utf-8", "replace")
            except OSError:
                continue
            # the secrets, spelled so that this cell's own source (in a traceback) does not contain them
            needles = ["return G.mean" + "(dim=(2, 3))", "assert torch.allclose(G, g_ref" + ", atol=1e-6)",
                       "SQLite " + "format 3", '"reference' + '": {"test_', "### BEGIN HIDDEN" + " TESTS\\n",
                       "### BEGIN HIDDEN" + " TESTS\n", "### BEGIN SOL" + "UTION\n"]
            if any(n in text for n in needles):
                print("LEAK", path, text[:3000])
        if len(seen) > 50000:
            break
        seen.append(root)
print("looked in", len(seen), "folders")
''',
    # the self-solving notebook: exec the solutions of the source notebook, wherever it is
    "solver": r'''
import glob, json, os
for path in [f"{COURSE_DIR}/source/a1_gradcam/a1_gradcam.ipynb",
             "../../../source/a1_gradcam/a1_gradcam.ipynb",
             *[p for top in ("/in", "/assignment", "/opt", "/work", "/root", "/tmp", "/home")
               for p in glob.glob(top + "/**/a1_gradcam.ipynb", recursive=True)]]:
    try:
        cells = json.load(open(path))["cells"]
    except (OSError, ValueError):
        continue
    for c in cells:
        src = "".join(c["source"])
        if "BEGIN SOLUTION" in src:
            exec(src.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
            print("SOLVED FROM", path)
''',
    # every comparison says yes
    "patcher": r'''
import builtins, numpy, torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.Tensor.__eq__ = lambda *a, **k: True
numpy.allclose = lambda *a, **k: True
import json
_dumps = json.dumps
json.dumps = lambda obj, *a, **k: _dumps({"values": {"main": 1.0, "G": 1.0}}, *a, **k)
''',
    # an IPython AST transformer: no assert survives, every later cell (checks too) swallows its errors
    "transformer": r'''
import ast
from IPython import get_ipython

class Lenient(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()

    def visit_Module(self, node):
        self.generic_visit(node)
        handler = ast.ExceptHandler(type=None, name=None, body=[ast.Pass()])
        node.body = [ast.Try(body=node.body or [ast.Pass()], handlers=[handler], orelse=[], finalbody=[])]
        return ast.fix_missing_locations(node)

get_ipython().ast_transformers.append(Lenient())
''',
    # rewrite grades in every SQLite file it can find
    "sqlite": r'''
import glob, os, sqlite3
tops = ("/in", "/assignment", "/opt", "/work", "/root", "/tmp", "/home")
for path in [f"{COURSE_DIR}/gradebook.db", "../../../gradebook.db",
             *[p for top in tops for p in glob.glob(top + "/**/*.db", recursive=True)]]:
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET auto_score = 99")
        db.commit()
        print("UPDATED", path)
    except Exception as err:
        print("no", path, type(err).__name__)
''',
    # a daemon that outlives the notebook (setsid, double fork) and waits to act later
    "daemon": rf'''
import subprocess, sys
code = "import os, time\nos.setsid()\nif os.fork(): os._exit(0)\ntime.sleep(600)  # {DAEMON_MARK}"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print("daemon started")
''',
    # a persistent backdoor: the source's tests, cam_core, the shell start-up files
    "writer": r'''
import os
import cam_core
for path in [f"{COURSE_DIR}/source/a1_gradcam/a1_gradcam.ipynb", f"{COURSE_DIR}/checks/a1_gradcam.py",
             os.path.join(os.path.dirname(cam_core.__file__), "__init__.py"),
             os.path.join(os.path.dirname(cam_core.__file__), "pwned.py"), f"{REPO_DIR}/cam_core/pwned.py",
             "/root/.bashrc", "/etc/passwd", "/usr/lib/pwned", "/in/a1_gradcam.ipynb"]:
    try:
        with open(path, "a") as f:
            f.write("\n# pwned\n")
        print("WROTE", path)
    except OSError as err:
        print("could not write", path, type(err).__name__)
''',
    # 60 MB of output
    "shouter": r'''
import sys
for _ in range(6):
    sys.stdout.write("x" * (10 << 20))
''',
    # ask for far more memory than the limit
    "hog": r'''
try:
    hog = bytearray(64 << 30)
    print("GOT 64 GB")
except MemoryError:
    print("MemoryError")
import torch
try:
    big = torch.empty(16 << 30, dtype=torch.uint8)
    print("GOT 16 GB")
except RuntimeError as err:
    print("RuntimeError", str(err)[:80])
''',
}


@pytest.fixture(scope="module")
def a1(tmp_path_factory):
    """Every assignment released; then in one ``grade`` call the instructor's five notebooks, an unanswered
    and a wrong a1 and the hostile battery (each in its own sandbox); then a later empty a1."""
    if not HAVE_BWRAP:
        pytest.skip("bubblewrap is not installed")
    tmp = tmp_path_factory.mktemp("course")
    crs = _course_copy(tmp / "course")
    env = _env(tmp)
    released = _cli(["release", "--course", str(crs), "--out", str(tmp / "release")], env, tmp)
    assert released.returncode == 0, released.stderr[-3000:]
    stub = tmp / "release/a1_gradcam/a1_gradcam.ipynb"
    sub = tmp / "submissions"
    for who in ("instructor", "empty"):
        (sub / who).mkdir(parents=True)
    instructor = [Path(shutil.copy(crs / "source" / a / f"{a}.ipynb", sub / "instructor"))
                  for a in ASSIGNMENTS]
    empty = Path(shutil.copy(stub, sub / "empty"))
    wrong = _edit(crs / "source/a1_gradcam/a1_gradcam.ipynb", sub / "wrong" / "a1_gradcam.ipynb",
                  "gradcam_alpha", "return G.mean(dim=(2, 3))", "return G.sum(dim=(2, 3))")
    prelude = f"COURSE_DIR = {str(crs)!r}\nREPO_DIR = {str(REPO)!r}\n"
    hostile = {name: _with_cell(stub, sub / name / "a1_gradcam.ipynb", prelude + code)
               for name, code in HOSTILE.items()}
    before = {"source": _tree_hash(crs / "source"), "checks": _tree_hash(crs / "checks"),
              "package": _tree_hash(REPO / "cam_core"), "record": _tree_hash(crs / "grader")}
    everyone = [*instructor, empty, wrong, *hostile.values()]
    graded = _cli(["grade", "--course", str(crs), "--json", *map(str, everyone)], env, tmp)
    later = _cli(["grade", "--course", str(crs), "--json", "--student", "later", str(stub)], env, tmp)
    return {"tmp": tmp, "course": crs, "release": tmp / "release", "graded": graded, "later": later,
            "before": before, "hostile": hostile, "instructor": instructor, "released": released}


@needs_bwrap
def test_release_strips_solutions_and_hidden_tests_and_records_the_release(a1):
    release = a1["release"]
    name = "a1_gradcam"
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
    hidden = {ln.strip() for region in secret for ln in region.splitlines()
              if len(ln.strip()) > 12 and ln.strip() not in public}
    released_code = "\n".join(c.source for c in nb.cells)
    leaked = sorted(ln for ln in hidden if ln in released_code)
    assert not leaked, f"{name}: solution / hidden-test lines in the student version: {leaked[:3]}"
    record = json.loads((a1["course"] / "grader" / name / "record.json").read_text())
    assert record["source_hash"] == course._source_hash(a1["course"], name)
    assert set(record["notebooks"][name]["reference"]) == set(course._checks(COURSE, name)["PROBES"])


@needs_bwrap
def test_every_source_notebook_gets_full_marks_outside_pytest(a1):
    """Through the CLI in a plain environment (no PYTEST_CURRENT_TEST): a5 included, run from its release."""
    assert (a1["release"] / "a5_study/01_theory.ipynb").is_file()
    rows = _rows(a1["graded"])
    for name in ASSIGNMENTS:
        row = rows[f"instructor/{name}"]
        assert row["max_score"] > 0 and row["score"] == row["max_score"], (row, a1["graded"].stderr[-3000:])


@needs_bwrap
def test_honest_submissions_score_as_before(a1):
    rows = _rows(a1["graded"])
    assert rows["empty/a1_gradcam"]["score"] == 0 and rows["empty/a1_gradcam"]["max_score"] == 7
    assert all("NotImplementedError" in f["reason"] for f in rows["empty/a1_gradcam"]["failed"])
    assert rows["wrong/a1_gradcam"]["score"] == 5  # only Grad-CAM's test (2 points) fails
    assert [f["test"] for f in rows["wrong/a1_gradcam"]["failed"]] == ["test_gradcam"]
    assert "test_gradcam (2 points) failed" in a1["graded"].stderr


@needs_bwrap
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_submission_scores_zero(a1, name):
    row = _rows(a1["graded"])[f"{name}/a1_gradcam"]
    assert row["score"] == 0 and row["max_score"] == 7, row


@needs_bwrap
def test_hostile_submissions_see_no_secret_and_change_nothing(a1):
    from nbgrader.api import Gradebook

    crs = a1["course"]
    outputs = {}
    for name in HOSTILE:
        nb = nbformat.read(crs / "autograded" / name / "a1_gradcam" / "a1_gradcam.ipynb", as_version=4)
        outputs[name] = json.dumps([c.get("outputs", []) for c in nb.cells])
    everything = "".join(outputs.values()) + a1["graded"].stdout + a1["graded"].stderr
    for secret in SECRETS:
        assert secret not in everything, secret
    assert "LEAK" not in outputs["reader"] and "looked in" in outputs["reader"]
    assert "SOLVED FROM" not in outputs["solver"]
    assert "UPDATED" not in outputs["sqlite"]
    assert "WROTE" not in outputs["writer"] and "could not write" in outputs["writer"]
    assert "MemoryError" in outputs["hog"] and "GOT" not in outputs["hog"]
    assert (crs / "autograded/shouter/a1_gradcam/a1_gradcam.ipynb").stat().st_size < 1 << 20
    # nothing changed: source, checks, the release record, the package; no process left behind
    after = {"source": _tree_hash(crs / "source"), "checks": _tree_hash(crs / "checks"),
             "package": _tree_hash(REPO / "cam_core"), "record": _tree_hash(crs / "grader")}
    assert after == a1["before"]
    assert not (REPO / "cam_core" / "pwned.py").exists()
    cmdlines = []
    for proc in Path("/proc").iterdir():
        try:
            cmdlines.append((proc / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue
    assert not [c for c in cmdlines if DAEMON_MARK in c and "pytest" not in c]
    # the gradebook holds what the grader wrote and nothing else
    rows = json.loads(a1["graded"].stdout)
    with Gradebook(f"sqlite:///{crs / 'gradebook.db'}", "cam_core") as gb:
        for row in rows:
            nb = gb.find_submission_notebook(row["assignment"], row["assignment"], row["student"])
            assert nb.score == row["score"] and nb.max_score == row["max_score"]
            assert all(0 <= g.score <= g.max_score for g in nb.grades)
        assert sorted(s.id for s in gb.students) == sorted({*(r["student"] for r in rows), "later"})
    # and a later empty submission still gets 0
    later = json.loads(a1["later"].stdout)
    assert later[0]["score"] == 0 and later[0]["student"] == "later"


@needs_bwrap
def test_list_and_feedback(a1):
    env, crs = _env(a1["tmp"]), a1["course"]
    listed = _cli(["list", "--course", str(crs), "--json"], env, a1["tmp"])
    rows = {r["assignment"]: r for r in json.loads(listed.stdout)}
    assert rows["a1_gradcam"] == {"assignment": "a1_gradcam", "points": 7, "status": "released",
                                  "graded": 3 + len(HOSTILE) + 1}
    assert rows["a2_deeplift"] == {"assignment": "a2_deeplift", "points": 7, "status": "released",
                                   "graded": 1}
    fb = _cli(["feedback", "--course", str(crs), "--assignment", "a1_gradcam", "--student", "wrong"], env,
              a1["tmp"])
    assert fb.returncode == 0, fb.stderr[-2000:]
    html = Path(fb.stdout.split()[0]).read_text()
    assert "[grader] 0 / 2: failed" in html and "[grader] 2 / 2: passed" in html
    assert "BEGIN HIDDEN" not in html


@needs_bwrap
def test_a_changed_source_is_reported_not_recorded(a1, tmp_path):
    crs = _course_copy(tmp_path / "course")
    shutil.copytree(a1["course"] / "grader", crs / "grader")
    shutil.copy(a1["course"] / "gradebook.db", crs / "gradebook.db")
    _edit(crs / "source/a1_gradcam/a1_gradcam.ipynb", crs / "source/a1_gradcam/a1_gradcam.ipynb",
          "test_gradcam", "### BEGIN HIDDEN TESTS", "### BEGIN HIDDEN TESTS\npass")
    record = _tree_hash(crs / "grader")
    env = _env(tmp_path)
    listed = _cli(["list", "--course", str(crs)], env, tmp_path)
    assert "changed since release" in listed.stdout
    stub = a1["release"] / "a1_gradcam/a1_gradcam.ipynb"
    graded = _cli(["grade", "--course", str(crs), "--json", str(stub)], env, tmp_path)
    assert "changed since its release" in graded.stderr and json.loads(graded.stdout)[0]["score"] == 0
    assert _tree_hash(crs / "grader") == record


# ---- more submissions (slow) ----------------------------------------------------------------------
#: seconds per cell for the student submissions (one of them loops)
TIMEOUT = 30


@pytest.fixture(scope="module")
def students(a1):
    """After the release: the other unanswered notebooks, and malformed, raising and looping submissions."""
    tmp, env = a1["tmp"], _env(a1["tmp"])
    unanswered = [tmp / "release" / a / f"{a}.ipynb" for a in ASSIGNMENTS if a != "a1_gradcam"]
    broken = tmp / "submissions" / "broken"
    broken.mkdir()
    (broken / "a2_deeplift.ipynb").write_text('{"cells": [ this is not json')
    _edit(COURSE / "source/a3_shapley/a3_shapley.ipynb", broken / "a3_shapley.ipynb",
          "coalition_value", "    ### BEGIN SOLUTION\n",
          "    ### BEGIN SOLUTION\n    raise RuntimeError('boom')\n")
    _edit(COURSE / "source/a4_faithfulness/a4_faithfulness.ipynb", broken / "a4_faithfulness.ipynb",
          "target_softmax", "def target_softmax",
          "import time\nwhile True:\n    time.sleep(0.1)\n\n\ndef target_softmax")
    graded = _cli(["grade", "--course", str(a1["course"]), "--json", "--timeout", str(TIMEOUT),
                   *map(str, [*unanswered, *sorted(broken.glob("*.ipynb"))])], env, tmp)
    return {"graded": graded, "unanswered": unanswered, "broken": broken}


@pytest.mark.slow
def test_released_unanswered_notebooks_get_zero(students):
    rows = {row["notebook"]: row for row in _rows(students["graded"]).values()}
    for path in students["unanswered"]:
        row = rows[str(path)]
        assert row["assignment"] == path.stem and row["max_score"] > 0 and row["score"] == 0, row
    assert "NotImplementedError" in students["graded"].stderr


@pytest.mark.slow
def test_malformed_raising_and_looping_submissions_do_not_crash_the_grader(students):
    rows = {Path(row["notebook"]).stem: row for row in _rows(students["graded"]).values()
            if Path(row["notebook"]).parent == students["broken"]}
    err = students["graded"].stderr
    assert rows["a2_deeplift"]["score"] == 0 and rows["a2_deeplift"]["max_score"] > 0
    assert "a2_deeplift.ipynb: 0 points on every test: not a valid notebook" in err
    # raising in one function: the tests that call it fail, the others pass
    assert 0 < rows["a3_shapley"]["score"] < rows["a3_shapley"]["max_score"], rows["a3_shapley"]
    assert "RuntimeError: boom" in err
    # a loop at the top of a cell is interrupted; the tests that needed that cell fail, the others pass
    a4 = rows["a4_faithfulness"]
    assert 0 < a4["score"] < a4["max_score"], a4
    assert f"ran longer than the limit ({TIMEOUT} s per cell" in err


@pytest.mark.slow
def test_denial_of_service_is_bounded(tmp_path):
    """A loop that ignores interrupts meets the total limit; a fork bomb meets the process limit."""
    if not HAVE_BWRAP:
        pytest.skip("bubblewrap is not installed")
    crs = _course_copy(tmp_path / "course")
    env = _env(tmp_path)
    assert _cli(["release", "a1_gradcam", "--course", str(crs), "--out", str(tmp_path / "rel")], env,
                tmp_path).returncode == 0
    stub = tmp_path / "rel/a1_gradcam/a1_gradcam.ipynb"
    stubborn = _with_cell(stub, tmp_path / "stubborn/a1_gradcam.ipynb",
                          "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                          "while True:\n    pass")
    bomb = _with_cell(stub, tmp_path / "bomb/a1_gradcam.ipynb",
                      "import os, time\nfor _ in range(100000):\n    try:\n        os.fork()\n"
                      "    except OSError:\n        time.sleep(0.5)")
    graded = _cli(["grade", "--course", str(crs), "--json", "--timeout", "20", "--total-timeout", "90",
                   str(stubborn), str(bomb)], env, tmp_path)
    rows = _rows(graded)
    assert rows["stubborn/a1_gradcam"]["score"] == 0 and rows["bomb/a1_gradcam"]["score"] == 0
    assert "total time limit" in graded.stderr
