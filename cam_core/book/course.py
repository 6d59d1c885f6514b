"""``python -m cam_core course``: the book's assignments, released and graded so that students cannot cheat.

The course is the folder ``course/`` in nbgrader's layout: ``nbgrader_config.py``, one folder per
assignment under ``source/`` (the instructor's notebooks, with ``### BEGIN SOLUTION`` regions,
visible tests and ``### BEGIN HIDDEN TESTS`` regions) and, for the grader, ``checks/<assignment>.py``
(the probes: what each graded test calls the student's functions with)::

    python -m cam_core course list [--json]                            # assignments, points, counts
    python -m cam_core course release [--out DIR] [ASSIGNMENT ...]       # = nbgrader generate_assignment
    python -m cam_core course grade NOTEBOOK.ipynb ... [--json]          # in a sandbox, checked outside it
    python -m cam_core course feedback [--assignment A] [--student S]    # = nbgrader generate_feedback

``release`` writes the student versions (solutions replaced by ``raise NotImplementedError()``,
hidden tests removed; a5 gets the chapter it reruns) to ``course/release/<assignment>/`` or
``DIR/<assignment>/``, records the assignment in the gradebook ``course/gradebook.db``, and keeps
the *release record* in ``course/grader/<assignment>/``: the released files, a hash of
``source/<assignment>/`` and its checks, and the reference values (the probes run on the
instructor's solutions). ``source/`` is only read.

``grade`` runs each submission in its own bubblewrap sandbox (:mod:`cam_core.book.course_sandbox`): a
fresh folder holding the student's notebook merged into the released one (locked and test cells
as released, the student's solution cells) and the released files; no course folder, gradebook,
other submission, repository or home directory; no network; user ``nobody``; limits on memory,
processes, file size, time per cell and per notebook. After the notebook, the probes export the raw
values of the student's functions on fixed inputs as plain data (JSON). This process compares them
with the reference values and alone writes the gradebook: patching ``assert``, torch or IPython in
the kernel changes nothing, and the hidden tests and reference values never enter the sandbox. A
test scores its points when every value matches. ``score / max`` is printed per notebook (``--json``:
student, assignment, score, max_score, each failed test and why) and recorded in the gradebook,
with the executed notebook in ``course/autograded/`` for ``feedback``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import re
import runpy
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cam_core.book import course_sandbox as sandbox

#: the course's nbgrader configuration file, in the course folder
CONFIG_FILE = "nbgrader_config.py"
#: seconds a cell of a graded notebook may run before it is interrupted (``--timeout``)
DEFAULT_CELL_TIMEOUT = 120
#: seconds a whole graded notebook may run (``--total-timeout``)
DEFAULT_TOTAL_TIMEOUT = 900
#: address space of each process of a graded notebook, GiB (``--memory``)
DEFAULT_MEMORY_GB = 6.0
#: student and assignment names: one path component of letters, digits, ``_``, ``-`` and ``.``
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: the largest submitted notebook read
MAX_NOTEBOOK_BYTES = 50 << 20
#: folders of the course written by the commands (never ``source/``)
RECORDS = "grader"


class CourseError(RuntimeError):
    """A problem with the command's input, reported in one message (no traceback)."""


@dataclass
class Failure:
    """A graded test a submission did not pass."""

    test: str
    points: float
    reason: str


@dataclass
class Grade:
    """The grader's result for one submitted notebook."""

    notebook: str  # the path given on the command line
    assignment: str
    score: float
    max_score: float
    student: str = ""
    failed: list[Failure] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # limits hit, why it was not run, source changed

    def summary(self) -> dict[str, Any]:
        """What ``--json`` prints for it."""
        out = {k: v for k, v in asdict(self).items() if k in ("notebook", "student", "assignment", "score",
                                                                "max_score", "messages")}
        out["failed"] = [asdict(f) for f in self.failed]
        return out


# ---- the course folder and nbgrader ------------------------------------------------------------
def default_course_dir() -> Path:
    """``./course`` when it exists, else ``course/`` of the repository this package is in."""
    here = Path.cwd() / "course"
    if (here / CONFIG_FILE).is_file():
        return here
    return Path(__file__).resolve().parents[2] / "course"


def check_course_dir(course_dir: str | Path) -> Path:
    course = Path(course_dir).resolve()
    if not (course / CONFIG_FILE).is_file() or not (course / "source").is_dir():
        raise CourseError(f"{course} is not a course folder: it needs {CONFIG_FILE} and source/<assignment>/ "
                          "(run from the repository root or pass --course DIR)")
    return course


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid student / assignment name (one path component), else a CourseError."""
    if not isinstance(value, str) or not NAME.fullmatch(value) or value in (".", ".."):
        raise CourseError(f"invalid {kind} {value!r}: use 1-64 letters, digits, '_', '-' or '.', starting "
                          "with a letter or digit (no '/', no '..', no spaces)")
    return value


def assignments(course_dir: str | Path) -> list[str]:
    """The assignments of the course: the folders of ``source/`` holding a notebook."""
    source = check_course_dir(course_dir) / "source"
    return sorted(p.name for p in source.iterdir() if p.is_dir() and NAME.fullmatch(p.name)
                  and any(p.glob("*.ipynb")))


def _nbgrader() -> Any:
    try:
        import nbgrader.apps
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "nbgrader":
            raise CourseError("the course commands need nbgrader: pip install -e '.[course]' "
                              "(make test's set-up installs it)") from err
        raise
    return nbgrader.apps


def _api(course: Path, **settings: Any) -> Any:
    """An ``NbGraderAPI`` configured from ``course/nbgrader_config.py`` with ``course`` as its root.

    Only that file is read (not ``~/.jupyter``), so the result does not depend on the user's set-up.
    ``settings`` are ``{"Class.trait": value}`` overrides."""
    from traitlets.config import Config, PyFileConfigLoader

    apps = _nbgrader()
    from nbgrader.coursedir import CourseDirectory

    config = Config()
    config.merge(PyFileConfigLoader(CONFIG_FILE, path=str(course)).load_config())
    config.CourseDirectory.root = str(course)
    for name, value in settings.items():
        cls, trait = name.split(".")
        setattr(config[cls], trait, value)
    coursedir = CourseDirectory(config=config)
    return apps.NbGraderAPI(coursedir=coursedir, config=config)


def _log_errors(result: dict[str, Any]) -> str:
    """The error lines of an NbGraderAPI result's log (or the last line of its traceback)."""
    lines = [ln[len("[ERROR] "):] for ln in result.get("log", "").splitlines() if ln.startswith("[ERROR]")]
    lines = [ln for ln in lines if not ln.startswith(("Traceback", "  ")) and "Please see" not in ln]
    if not lines and result.get("error"):
        lines = result["error"].strip().splitlines()[-1:]
    return "; ".join(dict.fromkeys(lines)) or "unknown error"


@contextlib.contextmanager
def _this_python() -> Iterator[None]:
    """Run nbgrader with this interpreter's tools, restoring the environment on exit.

    nbgrader runs the ``alembic`` script (installed beside this interpreter, not necessarily on
    ``PATH``) when it creates a gradebook."""
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    try:
        with warnings.catch_warnings():
            # nbgrader's gradebook code triggers SQLAlchemy "not in session" warnings that concern nobody here
            warnings.filterwarnings("ignore", message=".*not in session.*")
            yield
    finally:
        os.environ["PATH"] = old_path


# ---- the checks and the release record ----------------------------------------------------------
def _checks(course: Path, name: str) -> dict[str, Any]:
    """``checks/<name>.py`` of the course: PROBES, ATOL, CHECKS, RELEASE_FILES (trusted, the instructor's)."""
    path = course / "checks" / f"{name}.py"
    if not path.is_file():
        raise CourseError(f"no checks for {name}: write {path} (PROBES: what each graded test exports; "
                          "see course/checks/a1_gradcam.py)")
    spec = runpy.run_path(str(path))
    spec.setdefault("ATOL", {})
    spec.setdefault("CHECKS", {})
    spec.setdefault("RELEASE_FILES", {})
    return spec


def _source_hash(course: Path, name: str) -> str:
    """sha256 of ``source/<name>/`` (every file, by relative path) and ``checks/<name>.py``."""
    digest = hashlib.sha256()
    root = course / "source" / name
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and ".ipynb_checkpoints" not in p.parts
             and "__pycache__" not in p.parts]
    for path in [*files, course / "checks" / f"{name}.py"]:
        digest.update(str(path.relative_to(course)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(missing)")
        digest.update(b"\0")
    return digest.hexdigest()


def _record_dir(course: Path, name: str) -> Path:
    return course / RECORDS / check_name("assignment", name)


def _load_record(course: Path, name: str) -> dict[str, Any] | None:
    path = _record_dir(course, name) / "record.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _grade_cells(nb: Any) -> dict[str, float]:
    """grade_id -> points of the graded test cells of a notebook."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"].get("points", 0))
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def _grade_id(cell: Any) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


def merge(template: Any, submitted: Any) -> Any:
    """The notebook that is run: ``template`` (as released) with the student's solution cells.

    Locked and test cells are always the released ones (a deleted one is put back where it was); the
    student's solution cells replace the released stubs; the student's own extra code and markdown
    cells are kept (source only: no outputs, no metadata)."""
    import nbformat

    released = {_grade_id(c): c for c in template.cells if _grade_id(c)}
    out: list[Any] = []
    seen: set[str] = set()
    for cell in submitted.get("cells", []):
        gid = _grade_id(cell)
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if gid in released:
            if gid in seen:
                continue
            seen.add(gid)
            new = copy.deepcopy(released[gid])
            meta = new.metadata.get("nbgrader", {})
            if meta.get("solution") and not meta.get("locked") and cell.get("cell_type") == new.cell_type:
                new.source = source
            out.append(new)
        elif cell.get("cell_type") == "code":
            out.append(nbformat.v4.new_code_cell(source))
        elif cell.get("cell_type") == "markdown":
            out.append(nbformat.v4.new_markdown_cell(source))
    for cell in template.cells:  # released cells the student deleted go back after their predecessor
        gid = _grade_id(cell)
        if gid and gid not in seen:
            order = [_grade_id(c) for c in template.cells if _grade_id(c)]
            before = [g for g in order[:order.index(gid)] if g in seen]
            at = max((i for i, c in enumerate(out) if _grade_id(c) in before), default=-1) + 1
            out.insert(at, copy.deepcopy(cell))
            seen.add(gid)
    nb = nbformat.v4.new_notebook(metadata=copy.deepcopy(template.metadata))
    nb.cells = out
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def _limits(timeout: int = DEFAULT_CELL_TIMEOUT, total_timeout: int = DEFAULT_TOTAL_TIMEOUT,
            memory_gb: float = DEFAULT_MEMORY_GB) -> sandbox.Limits:
    if timeout < 1 or total_timeout < 1 or memory_gb <= 0:
        raise CourseError("--timeout, --total-timeout and --memory must be positive")
    return sandbox.Limits(cell_seconds=int(timeout), total_seconds=int(total_timeout),
                          memory_bytes=int(memory_gb * (1 << 30)))


def _run(notebook: Any, probes: dict[str, str], files: Path, limits: sandbox.Limits,
         use_sandbox: bool) -> sandbox.RunResult:
    try:
        return sandbox.run(notebook, probes, files, limits, sandbox=use_sandbox)
    except sandbox.SandboxError as err:
        raise CourseError(str(err)) from err


def _record(course: Path, name: str, release_dir: Path, limits: sandbox.Limits, use_sandbox: bool) -> dict:
    """Record a release (nbgrader wrote ``release_dir/<name>/``): its files, hash and reference values."""
    import nbformat

    spec = _checks(course, name)
    released = release_dir / name
    repo = Path(__file__).resolve().parents[2]
    for target, relative in spec["RELEASE_FILES"].items():
        src = repo / relative
        if not src.is_file():
            raise CourseError(f"{name} releases {relative} (checks/{name}.py RELEASE_FILES), "
                              f"missing from {repo}")
        if src.suffix == ".ipynb":
            nb = nbformat.read(src, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            nbformat.write(nb, released / check_name("released file", target))
        else:
            shutil.copy(src, released / check_name("released file", target))
    record_dir = _record_dir(course, name)
    tmp_dir = record_dir.with_name(f".{name}.new")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    shutil.copytree(released, tmp_dir / "release")
    notebooks = {}
    for path in sorted((course / "source" / name).glob("*.ipynb")):
        template = nbformat.read(released / path.name, as_version=4)
        tests = _grade_cells(template)
        missing = [t for t in tests if t not in spec["PROBES"]]
        if missing:
            raise CourseError(f"checks/{name}.py has no probe for the graded test(s) {', '.join(missing)}")
        probes = {t: spec["PROBES"][t] for t in tests}
        solution = merge(template, nbformat.read(path, as_version=4))
        result = _run(solution, probes, released, limits, use_sandbox)
        for test in tests:
            answer = result.answers.get(test)
            if answer is None or "error" in answer:
                why = (answer or {}).get("error") or "; ".join(result.messages) or "it did not run"
                raise CourseError(f"the instructor's solution of {name} fails the check of {test}: {why}")
        notebooks[path.stem] = {"points": tests, "reference": {t: result.answers[t]["values"] for t in tests}}
    record = {"assignment": name, "source_hash": _source_hash(course, name), "released_at": time.time(),
              "notebooks": notebooks}
    (tmp_dir / "record.json").write_text(json.dumps(record))
    if record_dir.exists():
        shutil.rmtree(record_dir)
    tmp_dir.rename(record_dir)
    return record


# ---- list and release ----------------------------------------------------------------------------
def release(course_dir: str | Path | None = None, out: str | Path | None = None,
            only: Sequence[str] | None = None, *, sandbox_run: bool = True,
            limits: sandbox.Limits | None = None) -> list[Path]:
    """Make the student version of each assignment (``nbgrader generate_assignment``) and record it.

    Writes ``<out or course/release>/<assignment>/`` and the release record
    ``course/grader/<assignment>/`` (reference values computed by running the probes on the
    instructor's solutions, in the sandbox). Returns the released notebooks."""
    course = check_course_dir(course_dir or default_course_dir())
    names = _select(course, only)
    release_dir = Path(out).resolve() if out else course / "release"
    api = _api(course, **{"CourseDirectory.release_directory": str(release_dir)})
    written = []
    with _this_python():
        for name in names:
            result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                raise CourseError(f"releasing {name} failed: {_log_errors(result)}")
            _record(course, name, release_dir, limits or _limits(), sandbox_run)
            written += sorted((release_dir / name).glob("*.ipynb"))
    return written


def _select(course: Path, only: Sequence[str] | None) -> list[str]:
    known = assignments(course)
    if not only:
        return known
    for name in only:
        check_name("assignment", name)
    unknown = [a for a in only if a not in known]
    if unknown:
        raise CourseError(f"no assignment {', '.join(unknown)} in {course / 'source'}; "
                          f"the assignments are {', '.join(known)}")
    return list(only)


def course_list(course_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Each assignment: its points, whether it is released (and unchanged since), how many were graded."""
    import nbformat

    course = check_course_dir(course_dir or default_course_dir())
    rows = []
    graded: dict[str, int] = {}
    if (course / "gradebook.db").is_file():
        from nbgrader.api import Gradebook

        with _this_python(), Gradebook(f"sqlite:///{course / 'gradebook.db'}", _course_id(course)) as gb:
            for a in gb.assignments:
                graded[a.name] = len(a.submissions)
    for name in assignments(course):
        points = sum(sum(_grade_cells(nbformat.read(p, as_version=4)).values())
                     for p in sorted((course / "source" / name).glob("*.ipynb")))
        record = _load_record(course, name)
        same = record is not None and record["source_hash"] == _source_hash(course, name)
        state = "not released" if record is None else "released" if same else "changed since release"
        rows.append({"assignment": name, "points": points, "status": state, "graded": graded.get(name, 0)})
    return rows


def _course_id(course: Path) -> str:
    return _api(course).coursedir.course_id


# ---- grade ---------------------------------------------------------------------------------------
def _assignment_of(path: Path, course: Path, known: list[str]) -> tuple[str, str]:
    """``(assignment, notebook name)`` for a submitted file: from its name (``a1_gradcam.ipynb``), else
    a name that contains one (``alice_a1_gradcam.ipynb``), else the nbgrader cell ids it carries."""
    sources = {name: sorted((course / "source" / name).glob("*.ipynb")) for name in known}
    for name, notebooks in sources.items():
        for nb in notebooks:
            if nb.stem == path.stem:
                return name, nb.stem
    for name, notebooks in sources.items():
        for nb in sorted(notebooks, key=lambda p: -len(p.stem)):
            if nb.stem in path.stem:
                return name, nb.stem
    ids = _grade_ids(path)
    overlap = {(name, nb.stem): len(ids & _grade_ids(nb))
               for name, notebooks in sources.items() for nb in notebooks}
    best = max(overlap, key=overlap.get, default=None)
    if best is not None and overlap[best] > 0 and list(overlap.values()).count(overlap[best]) == 1:
        return best
    raise CourseError(f"cannot tell which assignment {path} is for: name it as released "
                      f"({', '.join(n + '.ipynb' for n in known)}) or pass --assignment")


def _grade_ids(path: Path) -> set[str]:
    """The nbgrader cell ids of the ``solution`` / ``grade`` cells of a notebook (empty if unreadable)."""
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return set()
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        return {c["metadata"]["nbgrader"]["grade_id"] for c in cells
                if isinstance(c, dict) and "grade_id" in c.get("metadata", {}).get("nbgrader", {})
                and (c["metadata"]["nbgrader"].get("solution") or c["metadata"]["nbgrader"].get("grade"))}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return set()


def _student_of(path: Path, assignment: str) -> str:
    """A student id from where the file is: ``<student>/<assignment>/nb.ipynb`` (nbgrader's layout)
    gives ``<student>``, any other place the name of the folder holding the file."""
    parent = path.resolve().parent
    name = parent.parent.name if parent.name == assignment and parent.parent.name else parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:64] or "student"


def _readable(path: Path) -> tuple[Any, str | None]:
    """The notebook (cells without an id get one: no nbformat ``MissingIDFieldWarning``), or why it is
    not one that can be graded."""
    import nbformat
    from nbformat.validator import normalize
    from nbformat.warnings import MissingIDFieldWarning

    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None, f"the file is larger than {MAX_NOTEBOOK_BYTES >> 20} MB"
        with warnings.catch_warnings():  # a submission saved without cell ids: they are added below
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            nb = nbformat.read(str(path), as_version=4)
        nb = nbformat.from_dict(normalize(nb)[1])
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 -- any reading error means "malformed"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, f"not a valid notebook ({type(err).__name__}: {first[:200]})"
    return nb, None


def _is_array(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("__array__"), list) and isinstance(v.get("data"), list)
            and len(v["__array__"]) <= 16 and all(isinstance(n, int) and n >= 0 for n in v["__array__"])
            and math.prod(v["__array__"]) == len(v["data"])
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v["data"]))


def _shape(v: Any) -> tuple[int, ...] | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ()
    if isinstance(v, dict) and isinstance(v.get("__array__"), list):
        return tuple(v["__array__"]) if _is_array(v) else None
    return None


def compare(got: Any, expected: Any, atol: float, where: str = "the value", depth: int = 0) -> list[str]:
    """Why the exported value ``got`` (plain data from the sandbox) does not match ``expected``, or [].

    Arrays and numbers: the same shape and every element within ``atol`` (NaN never matches a
    number); dicts: every expected key (extra keys are allowed); lists: the same length; strings,
    booleans and None: equal; a ``{"__path__"}``: a path; ``{"__type__"}``: the same type name."""
    if depth > 20:
        return [f"{where} is nested too deeply"]
    expected_shape = _shape(expected)
    if expected_shape is not None:
        got_shape = _shape(got)
        if got_shape is None:
            return [f"{where} is not an array or number (expected shape {expected_shape})"]
        if got_shape != expected_shape and not (got_shape == () and expected_shape in ((), (1,))):
            return [f"{where} has shape {got_shape}, expected {expected_shape}"]
        import numpy as np

        g = np.asarray(got["data"] if isinstance(got, dict) else [got], dtype=float)
        e = np.asarray(expected["data"] if isinstance(expected, dict) else [expected], dtype=float)
        if g.size != e.size:
            return [f"{where} has {g.size} values, expected {e.size}"]
        diff = np.abs(g - e)
        bad = ~((diff <= atol) | (np.isnan(g) & np.isnan(e)))
        if bad.any():
            worst = float(np.nanmax(np.where(bad, diff, -1.0))) if not np.isnan(diff[bad]).all() else math.nan
            return [f"{where} differs from the expected values at {int(bad.sum())} of {g.size} places "
                    f"(largest difference {worst:.3g} > {atol:g})"]
        return []
    if isinstance(expected, dict) and "__path__" in expected:
        is_path = isinstance(got, dict) and isinstance(got.get("__path__"), str)
        return [] if is_path else [f"{where} is not a path"]
    if isinstance(expected, dict) and "__type__" in expected:
        return [] if got == expected else [f"{where} is not a {expected['__type__']}"]
    if isinstance(expected, dict):
        if not isinstance(got, dict) or "__array__" in got:
            return [f"{where} is not a dict with keys {sorted(expected)}"]
        missing = [k for k in expected if k not in got]
        if missing:
            return [f"{where} lacks {', '.join(map(repr, missing))}"]
        return [r for k in expected for r in compare(got[k], expected[k], atol, f"{where}[{k!r}]", depth + 1)]
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{where} is not a list of {len(expected)}"]
        return [r for i, (g, e) in enumerate(zip(got, expected, strict=True))
                for r in compare(g, e, atol, f"{where}[{i}]", depth + 1)]
    if type(got) is not type(expected) or got != expected:
        shown = repr(got)[:80] if isinstance(got, (str, bool)) or got is None else type(got).__name__
        return [f"{where} is {shown}, expected {expected!r}"[:300]]
    return []


def _clean(text: str, limit: int = 300) -> str:
    """A student-provided string, made safe to print: no control characters, cut to ``limit``."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text))
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "?", text).replace("\n", " ")[:limit]


def check_answers(answers: dict[str, Any], reference: dict[str, Any], points: dict[str, float],
                  spec: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Score each test: ``{test: (score, why it failed or "")}``, in this (the trusted) process."""
    scores = {}
    for test, max_points in points.items():
        answer = answers.get(test)
        if not isinstance(answer, dict):
            scores[test] = (0.0, "its check did not run (the notebook stopped before the end)")
            continue
        if "error" in answer:
            scores[test] = (0.0, f"{_clean(answer['error'])}")
            continue
        got = answer.get("values")
        got = got if isinstance(got, dict) else {}
        try:
            if test in spec["CHECKS"]:
                reasons = list(spec["CHECKS"][test](got, reference[test]))
            else:
                reasons = compare(got, reference[test], float(spec["ATOL"].get(test, 1e-5)), "the result")
        except Exception as err:  # noqa: BLE001 -- malformed data from the sandbox fails the test
            reasons = [f"its exported values could not be checked ({type(err).__name__})"]
        scores[test] = (0.0, "; ".join(reasons[:3])) if reasons else (max_points, "")
    return scores


def _write_gradebook(api: Any, assignment: str, notebook: str, student: str,
                     scores: dict[str, float]) -> None:
    """Record the scores (this process alone writes the gradebook)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry as err:
            raise CourseError(f"the gradebook has no assignment {assignment}: "
                              f"run course release {assignment}") from err
        gb.update_or_create_student(student)
        gb.update_or_create_submission(assignment, student)
        for g in gb.find_submission_notebook(notebook, assignment, student).grades:
            g.auto_score = float(scores.get(g.name, 0.0))
            g.manual_score = None
            g.needs_manual_grade = False
        gb.db.commit()


def _autograded(executed: Any, template: Any, scores: dict[str, tuple[float, str]],
                points: dict[str, float]) -> Any:
    """The executed notebook for ``feedback``: text outputs only, test cells as released, the verdicts."""
    import nbformat

    nb = None
    if isinstance(executed, dict):
        try:
            nb = nbformat.from_dict(executed)
            nbformat.validate(nb)
        except Exception:  # noqa: BLE001 -- what came back from the sandbox is untrusted
            nb = None
    nb = nb if nb is not None else copy.deepcopy(template)
    released = {_grade_id(c): c for c in template.cells if _grade_id(c)}
    for i, cell in enumerate(nb.cells):
        gid = _grade_id(cell)
        if gid in released and released[gid].metadata.get("nbgrader", {}).get("locked"):
            outputs = cell.get("outputs", [])
            nb.cells[i] = cell = copy.deepcopy(released[gid])
            cell.outputs = outputs if cell.cell_type == "code" else []
        elif gid in released:
            cell.metadata = copy.deepcopy(released[gid].metadata)
        elif "nbgrader" in cell.get("metadata", {}):
            del cell.metadata["nbgrader"]
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") in ("stream", "error")
                            or set(o.get("data", {})) <= {"text/plain"}]
        if gid in points:
            score, why = scores[gid]
            verdict = f"[grader] {score:g} / {points[gid]:g}: " + ("passed" if not why else f"failed: {why}")
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr" if why else "stdout",
                                                       text=verdict + "\n"))
    return nb


def _safe_dir(base: Path, *parts: str) -> Path:
    """``base/parts...`` after checking each part is a name and the result stays in ``base``."""
    path = base.joinpath(*(check_name("path part", p) for p in parts))
    if base.resolve() not in path.resolve().parents:
        raise CourseError(f"{path} is outside {base}")
    return path


def grade(notebooks: Sequence[str | Path], course_dir: str | Path | None = None, *,
          assignment: str | None = None, student: str | None = None,
          timeout: int = DEFAULT_CELL_TIMEOUT, total_timeout: int = DEFAULT_TOTAL_TIMEOUT,
          memory_gb: float = DEFAULT_MEMORY_GB, sandbox_run: bool = True) -> list[Grade]:
    """Grade submitted notebooks, each in its own sandbox, and record the scores in the gradebook.

    Args:
        notebooks: the submitted ``.ipynb`` files.
        assignment: the assignment they answer; by default found from each file's name.
        student: the student id to record; by default the folder holding each file (``<student>/
            <assignment>/nb.ipynb`` gives ``<student>``); files of one call that would share an id
            for the same assignment get ``-2``, ``-3``, ... appended.
        timeout: seconds each cell may run before it is interrupted.
        total_timeout: seconds the whole notebook (with the checks) may run.
        memory_gb: address space of each process of the submission.
        sandbox_run: False runs the notebook as this user without a sandbox (debugging only).
    """
    course = check_course_dir(course_dir or default_course_dir())
    known = assignments(course)
    if assignment is not None:
        check_name("assignment", assignment)
        if assignment not in known:
            raise CourseError(f"no assignment {assignment} in {course / 'source'}; "
                              f"the assignments are {', '.join(known)}")
    if student is not None:
        check_name("student", student)
    limits = _limits(timeout, total_timeout, memory_gb)
    if sandbox_run:
        try:
            sandbox.require_bwrap()
        except sandbox.SandboxError as err:
            raise CourseError(str(err)) from err
    jobs = []
    used: set[tuple[str, str]] = set()
    for given in notebooks:
        path = Path(given)
        if not path.is_file():
            raise CourseError(f"no such notebook: {path}")
        if assignment is not None:
            sources = sorted((course / "source" / assignment).glob("*.ipynb"))
            match = [s.stem for s in sources if s.stem == path.stem]
            name, nb_name = assignment, (match[0] if match else sources[0].stem)
        else:
            name, nb_name = _assignment_of(path, course, known)
        base = student or _student_of(path, name)
        sid, n = base, 1
        while (name, sid) in used:
            n += 1
            sid = f"{base}-{n}"
        used.add((name, check_name("student", sid)))
        jobs.append((str(given), path, name, nb_name, sid))

    notes: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="cam_core_release_") as tmp_release, _this_python():
        api = _api(course, **{"CourseDirectory.release_directory": tmp_release})
        for name in sorted({j[2] for j in jobs}):
            record = _load_record(course, name)
            if record is None:  # never released: record it now (the students' copies come from release)
                result = api.generate_assignment(name, force=True, create=True)
                if not result["success"]:
                    raise CourseError(f"could not record assignment {name} in the gradebook: "
                                      f"{_log_errors(result)}")
                _record(course, name, Path(tmp_release), limits, sandbox_run)
                notes[name] = [f"{name} was not released: recorded now from source/{name}"]
            elif record["source_hash"] != _source_hash(course, name):
                notes[name] = [f"source/{name} or checks/{name}.py changed since its release "
                               f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(record['released_at']))}): "
                               f"graded against the release; run `course release {name}` to grade against "
                               "the new version"]
        return [_grade_one(api, course, *job, limits, sandbox_run, notes.get(job[2], [])) for job in jobs]


def _grade_one(api: Any, course: Path, given: str, path: Path, name: str, nb_name: str, sid: str,
               limits: sandbox.Limits, sandbox_run: bool, notes: list[str]) -> Grade:
    import nbformat

    record = _load_record(course, name)
    entry = record["notebooks"][nb_name]
    points: dict[str, float] = entry["points"]
    released = _record_dir(course, name) / "release"
    template = nbformat.read(released / f"{nb_name}.ipynb", as_version=4)
    spec = _checks(course, name)
    messages = list(notes)
    content = path.read_bytes() if path.stat().st_size <= MAX_NOTEBOOK_BYTES else b""
    submitted = _safe_dir(course / "submitted", sid, name)
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    (submitted / f"{nb_name}.ipynb").write_bytes(content)
    nb, problem = _readable(path)
    executed = None
    if problem is None:
        probes = {t: spec["PROBES"][t] for t in points}
        result = _run(merge(template, nb), probes, released, limits, sandbox_run)
        executed = result.notebook
        messages += result.messages
        if result.timed_out_cells:
            messages.append(f"a cell ran longer than the limit ({limits.cell_seconds} s per cell, --timeout) "
                            "and was interrupted; the tests that needed it failed")
        scores = check_answers(result.answers, entry["reference"], points, spec)
    else:
        messages.append(f"0 points on every test: {problem}")
        scores = {t: (0.0, problem) for t in points}
    _write_gradebook(api, name, nb_name, sid, {t: s for t, (s, _) in scores.items()})
    autograded = _safe_dir(course / "autograded", sid, name)
    if autograded.exists():
        shutil.rmtree(autograded)
    autograded.mkdir(parents=True)
    nbformat.write(_autograded(executed, template, scores, points), autograded / f"{nb_name}.ipynb")
    failed = [Failure(t, points[t], why) for t, (s, why) in scores.items() if s < points[t]]
    if problem is None:
        messages += [f"test {f.test} ({f.points:g} point{'' if f.points == 1 else 's'}) failed: {f.reason}"
                     for f in failed]
    return Grade(notebook=given, assignment=name, score=sum(s for s, _ in scores.values()),
                 max_score=sum(points.values()), student=sid, failed=failed, messages=messages)


# ---- feedback ------------------------------------------------------------------------------------
def feedback(course_dir: str | Path | None = None, assignment: str | None = None,
             student: str | None = None) -> list[Path]:
    """nbgrader's feedback HTML of graded submissions: ``course/feedback/<student>/<assignment>/*.html``."""
    course = check_course_dir(course_dir or default_course_dir())
    names = _select(course, [assignment] if assignment else None)
    if student is not None:
        check_name("student", student)
    api = _api(course)
    written = []
    with _this_python():
        for name in names:
            graded = course / "autograded"
            students = [student] if student else (
                sorted(p.name for p in graded.iterdir() if (p / name).is_dir()) if graded.is_dir() else [])
            for sid in students:
                if not (graded / sid / name).is_dir():
                    if student:
                        raise CourseError(f"{sid} has no graded submission of {name}: run course grade first")
                    continue
                result = api.generate_feedback(name, sid, force=True)
                if not result["success"]:
                    raise CourseError(f"feedback for {sid} on {name} failed: {_log_errors(result)}")
                written += sorted((course / "feedback" / sid / name).glob("*.html"))
    return written


# ---- command line --------------------------------------------------------------------------------
def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("course", help="release and grade the book's nbgrader assignments",
                       description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="the assignments: points, released or not, graded submissions")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.add_argument("--course", default=None, help="the course folder (default: ./course)")
    ls.set_defaults(func=_list_command)
    r = actions.add_parser("release",
                           help="write the student versions (nbgrader generate_assignment) and record them")
    r.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: every assignment")
    r.add_argument("--out", default=None, help="folder for the student versions (default: course/release)")
    r.add_argument("--course", default=None, help="the course folder (default: ./course)")
    r.add_argument("--no-sandbox", action="store_true",
                   help="run the solutions without the sandbox (debugging)")
    r.set_defaults(func=_release_command)
    g = actions.add_parser("grade", help="grade submitted notebooks, each in a sandbox")
    g.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    g.add_argument("--json", action="store_true",
                   help="print a JSON list of {notebook, student, assignment, score, max_score, failed, "
                        "messages}")
    g.add_argument("--assignment", default=None, help="the assignment (default: from each file's name)")
    g.add_argument("--student", default=None, help="student id to record (default: the file's folder name)")
    g.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                   help=f"seconds a cell may run before it is interrupted (default {DEFAULT_CELL_TIMEOUT})")
    g.add_argument("--total-timeout", type=int, default=DEFAULT_TOTAL_TIMEOUT,
                   help=f"seconds a whole notebook may run (default {DEFAULT_TOTAL_TIMEOUT})")
    g.add_argument("--memory", type=float, default=DEFAULT_MEMORY_GB,
                   help=f"GiB of address space per process of a submission (default {DEFAULT_MEMORY_GB:g})")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run the notebooks as this user without a sandbox: only to debug your own notebooks")
    g.add_argument("--course", default=None, help="the course folder (default: ./course)")
    g.set_defaults(func=_grade_command)
    f = actions.add_parser("feedback", help="nbgrader's feedback HTML for graded submissions")
    f.add_argument("--assignment", default=None, help="default: every assignment")
    f.add_argument("--student", default=None, help="default: every graded student")
    f.add_argument("--course", default=None, help="the course folder (default: ./course)")
    f.set_defaults(func=_feedback_command)


def _warn_no_sandbox(args: argparse.Namespace, command: str) -> None:
    if args.no_sandbox:
        print(f"course {command}: WARNING --no-sandbox: the notebooks run as you, with your files, network "
              "and gradebook; a submission can read the solutions and change grades. Only for debugging your "
              "own notebooks.", file=sys.stderr)


def _list_command(args: argparse.Namespace) -> int:
    try:
        rows = course_list(args.course)
    except CourseError as err:
        print(f"course list: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'assignment':<20} {'points':>6}  {'status':<22} graded")
        for row in rows:
            print(f"{row['assignment']:<20} {row['points']:>6g}  {row['status']:<22} {row['graded']}")
    return 0


def _release_command(args: argparse.Namespace) -> int:
    _warn_no_sandbox(args, "release")
    try:
        written = release(args.course, args.out, args.assignments, sandbox_run=not args.no_sandbox)
    except CourseError as err:
        print(f"course release: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _grade_command(args: argparse.Namespace) -> int:
    _warn_no_sandbox(args, "grade")
    try:
        grades = grade(args.notebooks, args.course, assignment=args.assignment, student=args.student,
                       timeout=args.timeout, total_timeout=args.total_timeout, memory_gb=args.memory,
                       sandbox_run=not args.no_sandbox)
    except CourseError as err:
        print(f"course grade: {err}", file=sys.stderr)
        return 2
    for g in grades:
        for message in g.messages:
            print(f"{g.notebook}: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps([g.summary() for g in grades], indent=1))
    else:
        for g in grades:
            print(f"{g.notebook} ({g.assignment}, student {g.student}): {g.score:g} / {g.max_score:g}")
    return 0


def _feedback_command(args: argparse.Namespace) -> int:
    try:
        written = feedback(args.course, args.assignment, args.student)
    except CourseError as err:
        print(f"course feedback: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
