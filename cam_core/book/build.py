"""``python -m cam_core book``: execute every chapter with papermill, then build the Jupyter Book.

The chapters are the notebooks ``notebooks/[0-9][0-9]_*.ipynb`` (committed without outputs).
Each is executed by papermill into ``<build-dir>/notebooks/`` with its parameters; the HTML is
then built by Jupyter Book 1.x from those executed copies (``execute_notebooks: off``, so
nothing runs twice) with warnings as errors::

    python -m cam_core book                      # every chapter, full size (``make book``)
    python -m cam_core book --smoke              # every chapter on tiny sizes (CI)
    python -m cam_core book --only 04 -p N_IMAGES 200     # rerun chapter 04 only, then rebuild
    python -m cam_core book --skip-execute       # rebuild the HTML from the executed copies

Your own runs: ``papermill notebooks/04_faithfulness.ipynb build/book/notebooks/04_faithfulness.ipynb
-p BENCHMARK imagenet -p DATA_DIR /data/imagenet -p DEVICE cuda``, then ``--skip-execute``.

Parameters given to every chapter that declares them: ``DEVICE``, ``SMOKE``, ``RESULTS_DIR``
(and ``SEED`` when ``--seed`` is given). ``-p NAME VALUE`` sets ``NAME`` in every chapter that
declares it; ``-p 04:NAME VALUE`` in chapter 04 only. Values follow papermill's ``-p`` rules
(``True``/``False``/``None``, integers and floats are converted; anything else is a string).
Every chapter's parameters are checked before the first one runs: a name no chapter declares,
a size that is not a positive integer, or a ``DATA_DIR`` for an embedded benchmark stops the
command with the list of valid names. ``--smoke`` shrinks only the sizes that were not given.

Results: the full run writes the book's results to ``results/`` (``--results``); a ``--smoke``
run writes them to ``<build dir>/results`` and never over the book's.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
#: book source files copied into the build folder (everything else in ``book/`` is ignored)
BOOK_SOURCE_SUFFIXES = (".md", ".yml", ".bib", ".png", ".svg", ".css")
#: generated page with the parameters and timings of the run (listed in ``_toc.yml``)
RUN_LOG = "run_log"


@dataclass(frozen=True)
class Chapter:
    """One numbered notebook."""

    number: str  # "04"
    name: str  # "04_faithfulness"
    source: Path  # notebooks/04_faithfulness.ipynb

    @property
    def docname(self) -> str:
        return f"notebooks/{self.name}"


class BookError(RuntimeError):
    """A failure the command reports in one message (no traceback)."""


# ---- chapters and parameters --------------------------------------------------------------------
def find_chapters(notebooks_dir: Path) -> list[Chapter]:
    """The chapters, in order: every ``NN_*.ipynb`` in ``notebooks_dir``."""
    if not notebooks_dir.is_dir():
        raise BookError(f"no notebooks folder at {notebooks_dir}; run the command from the repository root "
                        "or pass --notebooks DIR")
    found = sorted(notebooks_dir.glob(CHAPTER_GLOB))
    if not found:
        raise BookError(f"no chapter notebooks matching {CHAPTER_GLOB} in {notebooks_dir}")
    return [Chapter(p.name[:2], p.stem, p) for p in found]


def resolve_value(text: str) -> Any:
    """papermill's ``-p`` conversion: ``True``/``False``/``None``, int, float, else the string."""
    from papermill.cli import _resolve_type

    return _resolve_type(text)


def parse_overrides(pairs: list[list[str]] | None) -> dict[str | None, dict[str, Any]]:
    """``[["N_IMAGES", "10"], ["04:SEED", "1"]]`` -> ``{None: {"N_IMAGES": 10}, "04": {"SEED": 1}}``."""
    out: dict[str | None, dict[str, Any]] = {}
    for name, value in pairs or []:
        chapter: str | None = None
        if ":" in name:
            chapter, name = name.split(":", 1)
            if not (len(chapter) == 2 and chapter.isdigit()):
                raise BookError(f"-p {chapter}:{name}: the chapter prefix must be two digits, "
                                f"e.g. -p 04:{name} VALUE")
        if not name.isidentifier() or name != name.upper():
            raise BookError(f"-p {name}: chapter parameters are UPPER_CASE names (e.g. N_IMAGES)")
        out.setdefault(chapter, {})[name] = resolve_value(value)
    return out


def declared_parameters(path: Path) -> dict[str, Any]:
    """The names (and defaults, as text) of a notebook's cell tagged ``parameters``."""
    import papermill as pm

    params = pm.inspect_notebook(str(path))
    return {name: info.get("default") for name, info in params.items()}


def chapter_parameters(chapter: Chapter, declared: dict[str, Any], common: dict[str, Any],
                       overrides: dict[str | None, dict[str, Any]]) -> dict[str, Any]:
    """What papermill gets for ``chapter``: common values and ``-p NAME`` overrides for the names it
    declares, then ``-p NN:NAME`` overrides, which must name a declared parameter."""
    params = {k: v for k, v in common.items() if k in declared}
    params.update({k: v for k, v in overrides.get(None, {}).items() if k in declared})
    for k, v in overrides.get(chapter.number, {}).items():
        if k not in declared:
            raise BookError(f"-p {chapter.number}:{k}: chapter {chapter.name} has no parameter {k}; "
                            f"its parameters are {', '.join(declared) or '(none)'}")
        params[k] = v
    return params


# ---- execution ----------------------------------------------------------------------------------
@contextlib.contextmanager
def this_python_kernel(build_dir: Path) -> Iterator[None]:
    """Make the kernel ``python3`` run *this* interpreter while executing chapters.

    A user-level ``python3`` kernelspec (``~/.local/share/jupyter/kernels``) would otherwise win
    over this environment's, and run the chapters in a Python without ``cam_core``. A kernelspec
    pointing at ``sys.executable`` is written under ``<build_dir>/jupyter`` and put first on
    ``JUPYTER_PATH``; the variable is restored on exit."""
    import json

    spec = build_dir / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (cam_core book)", "language": "python"}, indent=1))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(build_dir / "jupyter"), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


#: the longest Unix socket path (``sun_path``) less a margin
_SOCKET_PATH_MAX = 100


@contextlib.contextmanager
def kernel_config() -> Iterator[Any]:
    """Settings of the kernel a chapter runs in: it talks to us over Unix sockets
    (``KernelManager.transport = "ipc"``) instead of TCP ports on localhost, so nothing listens on the
    network and ipykernel has no reason to warn that "Kernel is running over TCP without encryption". The
    sockets live in a private folder of their own (mode 0700,
    removed afterwards): jupyter_client's default would put ``kernel-ipc-<n>`` in the current folder,
    where they are left behind and two builds started in one folder take each other's sockets. TCP
    (empty settings) where Unix sockets are not available or their path would be too long."""
    import tempfile

    from traitlets.config import Config

    config = Config()
    folder = tempfile.mkdtemp(prefix="cam_core-kernel-") if os.name == "posix" else None
    try:
        if folder is not None and len(os.path.join(folder, "kernel-99")) <= _SOCKET_PATH_MAX:
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = os.path.join(folder, "kernel")  # sockets <folder>/kernel-<n>
        yield config
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def execute_chapter(chapter: Chapter, output: Path, parameters: dict[str, Any], cwd: Path,
                    progress: bool, timeout: int | None = None) -> float:
    """Run ``chapter`` with papermill into ``output``; return the seconds it took.

    A failing cell raises :class:`BookError` carrying papermill's error; the partly executed
    notebook (with the traceback in the failing cell) is left at ``output``."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with kernel_config() as config:
            pm.execute_notebook(str(chapter.source), str(output), parameters=parameters, kernel_name="python3",
                                progress_bar=progress, cwd=str(cwd), execution_timeout=timeout, config=config)
    except PapermillExecutionError as err:
        raise BookError(f"chapter {chapter.name} failed in cell {err.exec_count} "
                        f"({err.ename}: {err.evalue}).\nThe executed notebook with the full traceback: "
                        f"{output}\n{''.join(_strip_ansi(line) for line in err.traceback[-3:])}") from None
    return time.perf_counter() - start


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text) + "\n"


# ---- the Jupyter Book ---------------------------------------------------------------------------
def _load_toc(book_src: Path) -> dict[str, Any]:
    import yaml

    toc_path = book_src / "_toc.yml"
    if not toc_path.is_file():
        raise BookError(f"no table of contents at {toc_path}")
    return yaml.safe_load(toc_path.read_text())


def _toc_entries(toc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``{file: ...}`` entry of a jb-book toc, in order (parts and chapters)."""
    out: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(node)
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def _missing_notebook(entry: Any, found: set[str]) -> bool:
    return (isinstance(entry, dict) and str(entry.get("file", "")).startswith("notebooks/")
            and entry["file"] not in found)


def book_toc(book_src: Path, chapters: list[Chapter]) -> dict[str, Any]:
    """The committed ``_toc.yml`` restricted to the chapters found (a listed notebook that is not in
    ``notebooks/`` is dropped; a found chapter the toc does not list is appended to the first part)."""
    toc = copy.deepcopy(_load_toc(book_src))
    found = {c.docname for c in chapters}

    def prune(node: Any) -> Any:
        if isinstance(node, dict):
            for key in ("parts", "chapters", "sections"):
                if key in node:
                    node[key] = [prune(c) for c in node[key] if not _missing_notebook(c, found)]
        return node

    toc = prune(toc)
    listed = {e["file"] for e in _toc_entries(toc)}
    missing = [c for c in chapters if c.docname not in listed]
    if missing:
        parts = toc.setdefault("parts", [{"caption": "Chapters", "chapters": []}])
        parts[0].setdefault("chapters", []).extend({"file": c.docname} for c in missing)
    return toc


def _versions() -> str:
    """``Python 3.11.9, torch 2.14.1, cam_core 0.1.0, ...``: what this run ran on."""
    from importlib import metadata

    out = [f"Python {sys.version.split()[0]}"]
    for dist in ("torch", "torchvision", "cam_core", "papermill", "jupyter-book"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def _run_log(executed: dict[Chapter, Path], device: str = "") -> str:
    """Markdown page: each chapter's parameters and run time, read from papermill's metadata."""
    import nbformat

    lines = ["# Run log", "",
             "Generated by `python -m cam_core book` from the executed notebooks' papermill metadata: "
             "the parameters each chapter ran with and how long it took.", "",
             "| chapter | parameters | started (UTC) | seconds |", "|---|---|---|---|"]
    for chapter, path in executed.items():
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        params = ", ".join(f"`{k}={_shown_value(v)}`" for k, v in (meta.get("parameters") or {}).items()) \
            or "(defaults)"
        started = str(meta.get("start_time", "?"))[:19].replace("T", " ")
        seconds = meta.get("duration")
        secs = f"{seconds:.0f}" if isinstance(seconds, int | float) else "?"
        lines.append(f"| [{chapter.name}]({chapter.docname}.ipynb) | {params} | {started} | {secs} |")
    lines += ["", f"Book built {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {sys.platform} with "
              f"{_versions()}.", ""]
    if device:
        lines += [f"Device: {device}.", ""]
    return "\n".join(lines)


def stage_book(book_src: Path, build_dir: Path, chapters: list[Chapter], device: str = "") -> Path:
    """Copy the book sources next to the executed notebooks and write the toc and the run log.

    Every chapter must have an executed copy at ``<build_dir>/notebooks/<name>.ipynb`` that did
    not fail; otherwise :class:`BookError` says which and how to make it."""
    import nbformat
    import yaml

    executed: dict[Chapter, Path] = {}
    for c in chapters:
        path = build_dir / "notebooks" / f"{c.name}.ipynb"
        if not path.is_file():
            raise BookError(f"chapter {c.name} has no executed copy at {path}: run `python -m cam_core book "
                            f"--only {c.number}` (or place your own papermill output there)")
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        if meta.get("exception"):
            raise BookError(f"the executed copy of {c.name} at {path} stopped on an error; rerun it with "
                            f"`python -m cam_core book --only {c.number}`")
        executed[c] = path
        _remove_injected_cell(path)
    if not (book_src / "_config.yml").is_file():
        raise BookError(f"no book sources at {book_src} (expected _config.yml and _toc.yml)")
    for src in sorted(book_src.iterdir()):
        if src.is_file() and src.suffix in BOOK_SOURCE_SUFFIXES and src.name != "_toc.yml":
            shutil.copy2(src, build_dir / src.name)
    if (book_src / "_static").is_dir():  # the book's CSS (Jupyter Book adds every _static/*.css to each page)
        shutil.copytree(book_src / "_static", build_dir / "_static", dirs_exist_ok=True)
    (build_dir / "_toc.yml").write_text(yaml.safe_dump(book_toc(book_src, chapters), sort_keys=False))
    (build_dir / f"{RUN_LOG}.md").write_text(_run_log(executed, device))
    return build_dir


def _remove_injected_cell(path: Path) -> None:
    """Tag papermill's ``injected-parameters`` cell of an executed chapter ``remove-cell``: the page shows
    the chapter's own parameters cell (collapsed), and the run log page the values this run passed (with
    paths as :func:`cam_core.book.chapter.shown_path` shows them, never a machine's absolute path)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            changed = True
    if changed:
        nbformat.write(nb, path)


def _shown_value(value: Any) -> str:
    """A parameter's value on the run log: a path-like string as the pages show paths."""
    from cam_core.book.chapter import shown_path

    if isinstance(value, str) and (value.startswith(("/", "~")) or os.sep in value):
        return repr(shown_path(value))
    return repr(value)


def build_html(stage_dir: Path, warnings_as_errors: bool = True) -> Path:
    """``jupyter-book build`` (warnings as errors, every page rebuilt); returns the path of ``index.html``."""
    exe = Path(sys.executable).with_name("jupyter-book")
    program = str(exe) if exe.exists() else (shutil.which("jupyter-book") or "jupyter-book")
    cmd = [program, "build", str(stage_dir), "--all", "--builder", "html"]
    if warnings_as_errors:
        cmd += ["--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise BookError(f"the Jupyter Book build failed (warnings are errors):\n{tail}")
    index = stage_dir / "_build" / "html" / "index.html"
    if not index.is_file():
        raise BookError(f"jupyter-book finished but {index} is missing")
    return index


# ---- the command --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Execute the chapters (unless ``--skip-execute``), stage and build the book, print where it is."""
    try:
        return _run(args)
    except BookError as err:
        print(f"book: {err}", file=sys.stderr)
        return 1


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (what the chapters and the pages show: ``RESULTS_DIR``),
    else as is. The command's own messages print absolute paths."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _defaults(declared: dict[str, Any]) -> dict[str, Any]:
    """A chapter's declared defaults as values (papermill gives them as source text)."""
    import ast

    out = {}
    for k, v in declared.items():
        try:
            out[k] = ast.literal_eval(v) if isinstance(v, str) else v
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def check_plans(plans: dict[Chapter, dict[str, Any]], declared: dict[Chapter, dict[str, Any]],
                overrides: dict[str | None, dict[str, Any]]) -> None:
    """Every chapter's parameters, checked before the first one runs (:func:`cam_core.book.chapter.check`
    and :func:`~cam_core.book.chapter.check_data`: names, sizes, valid values, data folders, image counts)."""
    from cam_core.book.chapter import check, check_data

    names = list(dict.fromkeys(k for c in declared for k in declared[c]))
    unused = [k for k in overrides.get(None, {}) if k not in names]
    if unused:
        raise BookError(f"-p {', '.join(unused)}: no chapter to run declares it; the parameters are "
                        f"{', '.join(names)}")
    for c, plan in plans.items():
        params = {**_defaults(declared[c]), **plan}
        try:
            check(params, declared[c], chapter=f"chapter {c.name}")
            check_data(params, chapter=f"chapter {c.name}")
        except ValueError as err:
            raise BookError(str(err)) from None


def _run(args: argparse.Namespace) -> int:
    from cam_core.runtime import resolve_device

    root = Path.cwd()
    notebooks_dir = (root / args.notebooks).resolve()
    build_dir = (root / args.build_dir).resolve()
    results = getattr(args, "results", None)
    if results is None:  # the full run owns results/; a smoke run never writes over it
        results = os.path.join(args.build_dir, "results") if args.smoke else "results"
    results_dir = (root / results).resolve()
    chapters = find_chapters(notebooks_dir)
    wanted = {n.zfill(2) for n in args.only} if args.only else set()
    unknown = wanted - {c.number for c in chapters}
    if unknown:
        raise BookError(f"--only {', '.join(sorted(unknown))}: no such chapter; chapters are "
                        f"{', '.join(c.name for c in chapters)}")
    overrides = parse_overrides(args.param)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise BookError(str(err)) from None
    common: dict[str, Any] = {"DEVICE": args.device, "SMOKE": bool(args.smoke),
                              "RESULTS_DIR": _relative(results_dir, root)}
    if args.seed is not None:
        common["SEED"] = args.seed
    shown_device = f"{args.device} (resolved to {device})" if str(args.device) != str(device) else str(device)

    timings: dict[str, float] = {}
    if not args.skip_execute:
        todo = [c for c in chapters if not wanted or c.number in wanted]
        declared = {c: declared_parameters(c.source) for c in todo}
        plans = {c: chapter_parameters(c, declared[c], common, overrides) for c in todo}
        check_plans(plans, declared, overrides)
        build_dir.mkdir(parents=True, exist_ok=True)
        progress = sys.stderr.isatty()
        mode = "smoke" if args.smoke else "full"
        print(f"book: executing {len(todo)} chapter(s) ({mode} run, device={shown_device}) into "
              f"{build_dir / 'notebooks'}; results go to {results_dir}", flush=True)
        with this_python_kernel(build_dir):
            for i, c in enumerate(todo, 1):
                shown = ", ".join(f"{k}={v!r}" for k, v in plans[c].items() if k != "RESULTS_DIR")
                print(f"[{i}/{len(todo)}] {c.name} ({shown}) ...", flush=True)
                secs = execute_chapter(c, build_dir / "notebooks" / f"{c.name}.ipynb", plans[c], cwd=root,
                                       progress=progress, timeout=args.cell_timeout)
                timings[c.name] = secs
                print(f"[{i}/{len(todo)}] {c.name} done in {secs:.1f} s", flush=True)
    if args.no_html:
        done = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        print(f"book: {done}; HTML not built (--no-html): build it later with "
              f"`python -m cam_core book --skip-execute --build-dir {args.build_dir}`")
        return 0
    in_book = chapters
    if wanted or args.skip_execute:  # a partial run into any build folder: the book has what was executed
        in_book = [c for c in chapters if (build_dir / "notebooks" / f"{c.name}.ipynb").is_file()]
        left_out = [c for c in chapters if c not in in_book]
        if not in_book:
            raise BookError(f"no executed chapter in {build_dir / 'notebooks'}: run "
                            "`python -m cam_core book` (or --only NN) first")
        if left_out:
            print(f"book: left out of this book (no executed copy in {build_dir}): "
                  f"{', '.join(c.name for c in left_out)}; add them with "
                  f"`--only {' '.join(c.number for c in left_out)} --build-dir {args.build_dir}`", flush=True)
    print("book: building the HTML with Jupyter Book (warnings are errors) ...", flush=True)
    t0 = time.perf_counter()
    stage_book((root / args.book_src).resolve(), build_dir, in_book, device=shown_device)
    index = build_html(build_dir, warnings_as_errors=not args.allow_warnings)
    missing = [c.name for c in in_book if not (index.parent / f"{c.docname}.html").is_file()]
    if missing:
        raise BookError(f"jupyter-book finished but these chapters have no page: {', '.join(missing)}")
    timings["(book build)"] = time.perf_counter() - t0
    total = sum(timings.values())
    print("book: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    print(f"book: open {index}")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("book", help="run every chapter with papermill and build the Jupyter Book",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (passed to every chapter as DEVICE)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes in every chapter (SMOKE=True), for CI")
    p.add_argument("--only", nargs="+", metavar="NN", help="execute only these chapters (e.g. --only 04), "
                   "then rebuild the book from every chapter's executed copy")
    p.add_argument("--skip-execute", action="store_true",
                   help="execute nothing: rebuild the book from the executed copies in BUILD_DIR/notebooks "
                        "(yours from papermill, too)")
    p.add_argument("--no-html", action="store_true",
                   help="execute the chapters but do not build the HTML (e.g. on a GPU machine without "
                        "jupyter-book; copy the build dir back and run --skip-execute)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="chapter parameter: NAME VALUE for every chapter declaring it, NN:NAME VALUE for one")
    p.add_argument("--seed", type=int, default=None,
                   help="SEED for every chapter (default: each chapter's own)")
    p.add_argument("--build-dir", default=os.path.join("build", "book"),
                   help="where executed notebooks and the HTML go (default: build/book)")
    p.add_argument("--results", default=None,
                   help="RESULTS_DIR for every chapter (default: results, the book's; with --smoke: "
                        "BUILD_DIR/results, so that a smoke run never writes over the book's results)")
    p.add_argument("--notebooks", default="notebooks", help="folder of the chapter notebooks")
    p.add_argument("--book-src", default="book",
                   help="folder of the book's sources (_config.yml, _toc.yml, pages)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds a single cell may run (default: no limit)")
    p.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")
    p.set_defaults(func=run)
