"""``python -m cam_core course``: the book's assignments, released and graded with nbgrader.

The course is the folder ``course/`` in nbgrader's layout: ``nbgrader_config.py`` and one folder per
assignment under ``source/`` (the instructor's notebooks, with ``### BEGIN SOLUTION`` regions,
visible tests and ``### BEGIN HIDDEN TESTS`` regions). Both commands are thin wrappers over
nbgrader's own converters (:class:`nbgrader.apps.NbGraderAPI`), configured from that file::

    python -m cam_core course release [--out DIR] [ASSIGNMENT ...]   # = nbgrader generate_assignment
    python -m cam_core course grade NOTEBOOK.ipynb ... [--json]       # = nbgrader autograde

``release`` writes the student versions (solutions replaced by ``raise NotImplementedError()``,
hidden tests removed) to ``course/release/<assignment>/`` or ``DIR/<assignment>/``, and records the
assignments (with their hidden tests) in the gradebook ``course/gradebook.db`` (SQLite).

``grade`` copies each notebook to ``course/submitted/<student>/<assignment>/`` (the assignment is
found from the notebook's name, e.g. ``a1_gradcam.ipynb``, or given with ``--assignment``), runs
nbgrader's autograder (the test cells are restored from the gradebook, so a student cannot edit
them; each cell has a time limit) and prints ``score / max`` per notebook, recorded in the
gradebook. A notebook that raises gets 0 on the tests that fail; one that loops is interrupted
after ``--timeout`` seconds per cell; one that cannot be read or executed at all gets 0 on every
test; each with a message on stderr, never a crash of the grader.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: the course's nbgrader configuration file, in the course folder
CONFIG_FILE = "nbgrader_config.py"
#: seconds a cell of a graded notebook may run before it is interrupted (``--timeout``)
DEFAULT_CELL_TIMEOUT = 120


class CourseError(RuntimeError):
    """A problem with the command's input, reported in one message (no traceback)."""


@dataclass
class Grade:
    """The autograder's result for one submitted notebook."""

    notebook: str  # the path given on the command line
    assignment: str
    score: float
    max_score: float
    student: str = ""
    messages: list[str] = field(default_factory=list)  # why points were lost, or why it was not run

    def summary(self) -> dict[str, Any]:
        """What ``--json`` prints for it."""
        keys = ("notebook", "assignment", "score", "max_score")
        return {k: v for k, v in asdict(self).items() if k in keys}


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


def assignments(course_dir: str | Path) -> list[str]:
    """The assignments of the course: the folders of ``source/`` holding a notebook."""
    source = check_course_dir(course_dir) / "source"
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


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
    """Run nbgrader with this interpreter's tools and kernel, restoring the environment on exit.

    nbgrader runs the ``alembic`` script (installed beside this interpreter, not necessarily on
    ``PATH``) when it creates a gradebook, and graded notebooks must run in this interpreter, not in
    whatever ``python3`` kernel the user has (:func:`cam_core.book.this_python_kernel`)."""
    from cam_core.book.build import this_python_kernel

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    try:
        with tempfile.TemporaryDirectory(prefix="cam_core_kernel_") as tmp, this_python_kernel(Path(tmp)), \
                warnings.catch_warnings():
            # nbgrader's gradebook code triggers SQLAlchemy "not in session" warnings that concern nobody here
            warnings.filterwarnings("ignore", message=".*not in session.*")
            yield
    finally:
        os.environ["PATH"] = old_path


# ---- release -------------------------------------------------------------------------------------
def release(course_dir: str | Path | None = None, out: str | Path | None = None,
            only: Sequence[str] | None = None) -> list[Path]:
    """Make the student version of each assignment (``nbgrader generate_assignment``).

    Writes ``<out or course/release>/<assignment>/*.ipynb`` and records the assignments in the
    gradebook. Returns the released notebooks."""
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
            written += sorted((release_dir / name).glob("*.ipynb"))
    return written


def _select(course: Path, only: Sequence[str] | None) -> list[str]:
    known = assignments(course)
    if not only:
        return known
    unknown = [a for a in only if a not in known]
    if unknown:
        raise CourseError(f"no assignment {', '.join(unknown)} in {course / 'source'}; "
                          f"the assignments are {', '.join(known)}")
    return list(only)


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
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "student"


def _readable(path: Path) -> str | None:
    """Why ``path`` is not a notebook nbgrader can grade, or None."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 -- any reading error means "malformed"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not a valid notebook ({type(err).__name__}: {first[:200]})"
    return None


def _scores(api: Any, assignment: str, notebook: str,
            student: str) -> tuple[float, float, list[tuple[str, float]]]:
    """Score, max score and the failed tests of one submitted notebook, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        sub = gb.find_submission_notebook(notebook, assignment, student)
        failed = [(g.name, g.max_score) for g in sub.grades if (g.score or 0) < g.max_score]
        return float(sub.score or 0), float(sub.max_score), failed


def _zero(api: Any, assignment: str, notebook: str, student: str) -> None:
    """0 on every test of a submission that could not be run (as nbgrader does for a missing file)."""
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        gb.update_or_create_student(student)
        gb.update_or_create_submission(assignment, student)
        for g in gb.find_submission_notebook(notebook, assignment, student).grades:
            g.auto_score = 0
            g.manual_score = None
            g.needs_manual_grade = False
        gb.db.commit()


def _failure_reasons(autograded: Path, failed: list[tuple[str, float]]) -> list[str]:
    """For each failed test cell, the error it raised in the autograded notebook."""
    import nbformat

    cells = {}
    if autograded.is_file():
        nb = nbformat.read(str(autograded), as_version=4)
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    reasons = []
    for name, points in failed:
        errors = [o for o in cells.get(name, {}).get("outputs", []) if o.get("output_type") == "error"]
        why = f"{errors[-1].ename}: {errors[-1].evalue}".strip().rstrip(":") if errors else "failed"
        reasons.append(f"test {name} ({points:g} point{'' if points == 1 else 's'}) failed: {why[:300]}")
    return reasons


def grade(notebooks: Sequence[str | Path], course_dir: str | Path | None = None, *,
          assignment: str | None = None, student: str | None = None,
          timeout: int = DEFAULT_CELL_TIMEOUT) -> list[Grade]:
    """Autograde submitted notebooks (``nbgrader autograde``) and record the scores in the gradebook.

    Args:
        notebooks: the submitted ``.ipynb`` files.
        assignment: the assignment they answer; by default found from each file's name.
        student: the student id to record; by default the folder holding each file (``<student>/
            <assignment>/nb.ipynb`` gives ``<student>``); files of one call that would share an id
            for the same assignment get ``-2``, ``-3``, ... appended.
        timeout: seconds each cell may run before it is interrupted (a loop scores 0 on the tests
            after it that fail).
    """
    course = check_course_dir(course_dir or default_course_dir())
    known = assignments(course)
    if assignment is not None and assignment not in known:
        raise CourseError(f"no assignment {assignment} in {course / 'source'}; "
                          f"the assignments are {', '.join(known)}")
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
        used.add((name, sid))
        jobs.append((str(given), path, name, nb_name, sid))

    with tempfile.TemporaryDirectory(prefix="cam_core_release_") as tmp_release, _this_python():
        api = _api(course, **{"CourseDirectory.release_directory": tmp_release,
                              "Execute.timeout": int(timeout)})
        for name in sorted({j[2] for j in jobs}):  # the gradebook gets the current source (and hidden tests)
            result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                raise CourseError(f"could not record assignment {name} in the gradebook: "
                                  f"{_log_errors(result)}")
        return [_grade_one(api, course, *job) for job in jobs]


def _grade_one(api: Any, course: Path, given: str, path: Path, name: str, nb_name: str, sid: str) -> Grade:
    content = path.read_bytes()  # before clearing the folder, which may be where the file is
    submitted = course / "submitted" / sid / name
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    (submitted / f"{nb_name}.ipynb").write_bytes(content)
    messages = []
    problem = _readable(path)
    if problem is None:
        result = api.autograde(name, sid, force=True, create=True)
        if not result["success"]:
            problem = f"the autograder could not run it: {_log_errors(result)}"
        timeouts = re.findall(r"Timeout waiting for execute reply \((\d+)s\)", result.get("log", ""))
        if timeouts and problem is None:
            messages.append(f"a cell ran longer than the limit ({timeouts[0]} s per cell, --timeout) and was "
                            "interrupted; the tests that needed it failed")
    if problem is not None:
        _zero(api, name, nb_name, sid)
        messages.append(f"0 points on every test: {problem}")
    score, max_score, failed = _scores(api, name, nb_name, sid)
    if problem is None:
        messages += _failure_reasons(course / "autograded" / sid / name / f"{nb_name}.ipynb", failed)
    return Grade(notebook=given, assignment=name, score=score, max_score=max_score, student=sid,
                 messages=messages)


# ---- command line --------------------------------------------------------------------------------
def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("course", help="release and grade the book's nbgrader assignments",
                       description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser("release", help="write the student versions (nbgrader generate_assignment)")
    r.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: every assignment")
    r.add_argument("--out", default=None, help="folder for the student versions (default: course/release)")
    r.add_argument("--course", default=None, help="the course folder (default: ./course)")
    r.set_defaults(func=_release_command)
    g = actions.add_parser("grade", help="autograde submitted notebooks (nbgrader autograde)")
    g.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    g.add_argument("--json", action="store_true",
                   help='print a JSON list of {"notebook", "assignment", "score", "max_score"}')
    g.add_argument("--assignment", default=None, help="the assignment (default: from each file's name)")
    g.add_argument("--student", default=None, help="student id to record (default: the file's folder name)")
    g.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                   help=f"seconds a cell may run before it is interrupted (default {DEFAULT_CELL_TIMEOUT})")
    g.add_argument("--course", default=None, help="the course folder (default: ./course)")
    g.set_defaults(func=_grade_command)


def _release_command(args: argparse.Namespace) -> int:
    try:
        written = release(args.course, args.out, args.assignments)
    except CourseError as err:
        print(f"course release: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _grade_command(args: argparse.Namespace) -> int:
    try:
        grades = grade(args.notebooks, args.course, assignment=args.assignment, student=args.student,
                       timeout=args.timeout)
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

