"""The book: the ``book`` command's pieces, and a smoke run of every chapter + a book build.

The smoke run (marked ``notebooks``) runs ``python -m cam_core book --smoke`` as a user would,
into a temporary folder, then checks that every chapter page exists with its tables and
figures, and that the numbers shown are those of that run's results files.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from cam_core.book import build as book
from cam_core.book import paper

REPO = Path(__file__).resolve().parents[1]
#: the book's chapters, exactly: a missing or renamed chapter fails the tests instead of being skipped
EXPECTED_CHAPTERS = ["00_benchmarks", "01_theory", "02_shap_validation", "03_lift_approximation",
                     "04_faithfulness", "05_localization", "06_vqa", "07_sanity_checks",
                     "08_transformers"]
CHAPTERS = book.find_chapters(REPO / "notebooks")


# ---- the command's pieces (fast) --------------------------------------------------------------
def test_parse_overrides_and_values():
    out = book.parse_overrides(
        [
            ["N_IMAGES", "10"],
            ["04:SEED", "3"],
            ["SMOKE", "True"],
            ["DATA_DIR", "None"],
            ["BENCHMARKS", "imagenet"],
            ["LR", "0.5"],
        ]
    )
    assert out == {
        None: {"N_IMAGES": 10, "SMOKE": True, "DATA_DIR": None, "BENCHMARKS": "imagenet", "LR": 0.5},
        "04": {"SEED": 3},
    }
    with pytest.raises(book.BookError, match="UPPER_CASE"):
        book.parse_overrides([["n_images", "3"]])
    with pytest.raises(book.BookError, match="two digits"):
        book.parse_overrides([["4:SEED", "3"]])


def test_chapter_parameters_only_declared_names():
    ch = book.Chapter("04", "04_x", Path("04_x.ipynb"))
    declared = {"DEVICE": "'auto'", "N_IMAGES": "1000", "SMOKE": "False"}
    common = {"DEVICE": "cpu", "SMOKE": True, "RESULTS_DIR": "/r"}
    overrides = {None: {"N_IMAGES": 5, "OTHER": 1}, "04": {"DEVICE": "cuda"}, "05": {"SEED": 1}}
    assert book.chapter_parameters(ch, declared, common, overrides) == {
        "DEVICE": "cuda",
        "SMOKE": True,
        "N_IMAGES": 5,
    }
    with pytest.raises(book.BookError, match="has no parameter SEED"):
        book.chapter_parameters(ch, declared, common, {"04": {"SEED": 1}})


def test_find_chapters_is_the_numbered_notebooks():
    names = [c.name for c in CHAPTERS]
    assert names == sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert names == EXPECTED_CHAPTERS
    with pytest.raises(book.BookError, match="no notebooks folder"):
        book.find_chapters(REPO / "does-not-exist")


def test_toc_keeps_found_chapters_and_appends_unlisted(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        yaml.safe_dump(
            {
                "format": "jb-book",
                "root": "intro",
                "parts": [
                    {
                        "caption": "Chapters",
                        "chapters": [{"file": "notebooks/01_a"}, {"file": "notebooks/02_b"}],
                    },
                    {"caption": "Appendix", "chapters": [{"file": "setup"}]},
                ],
            }
        )
    )
    chapters = [
        book.Chapter("01", "01_a", Path("01_a.ipynb")),
        book.Chapter("03", "03_c", Path("03_c.ipynb")),
    ]
    toc = book.book_toc(tmp_path, chapters)
    files = [e["file"] for e in book._toc_entries(toc)]
    assert files == ["notebooks/01_a", "notebooks/03_c", "setup"]


def test_committed_sources_are_consistent():
    """Every committed chapter is in book/_toc.yml; committed notebooks carry no outputs; each has a
    first markdown cell (the question) and a second cell tagged `parameters` of UPPER_CASE names."""
    listed = {e["file"] for e in book._toc_entries(book._load_toc(REPO / "book"))}
    cfg = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    for c in CHAPTERS:
        assert c.docname in listed, f"{c.name} is not in book/_toc.yml"
        nb = nbformat.read(c.source, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        assert "parameters" in nb.cells[1].metadata.get("tags", []), (
            f"{c.name}: 2nd cell is not tagged parameters"
        )
        names = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=", nb.cells[1].source, flags=re.M)
        assert names and all(n == n.upper() for n in names), (
            f"{c.name}: parameters must be UPPER_CASE: {names}"
        )
        assert {"DEVICE", "SEED", "SMOKE", "RESULTS_DIR"} <= set(names), c.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{c.name} is committed with outputs"
                )


#: a code cell longer than this is plumbing a reader of the paper should not scroll past (issue 23)
LONGEST_OPEN_CELL = 10
_COLLAPSED = {"hide-input", "remove-input", "hide-cell", "remove-cell"}


def test_parameters_and_long_cells_are_collapsed():
    """Chapters read like the paper: the parameters cell and every code cell over ``LONGEST_OPEN_CELL``
    lines carry a Jupyter Book tag that collapses (``hide-input``: one click shows it) or removes its code,
    so the first thing on a page is the question and then a table or figure, not orchestration loops."""
    for c in CHAPTERS:
        nb = nbformat.read(c.source, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            tags = set(cell.metadata.get("tags", []))
            lines = cell.source.count("\n") + 1
            if "parameters" in tags or lines > LONGEST_OPEN_CELL:
                assert tags & _COLLAPSED, (
                    f"{c.name} cell {i} ({lines} lines{', parameters' if 'parameters' in tags else ''}) is shown "
                    "open: tag it hide-input (or move its plumbing into cam_core)")


def test_stage_refuses_missing_or_failed_executed_copy(tmp_path):
    ch = book.Chapter("01", "01_theory", REPO / "notebooks" / "01_theory.ipynb")
    with pytest.raises(book.BookError, match="--only 01"):
        book.stage_book(REPO / "book", tmp_path, [ch])
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"exception": True}})
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_theory.ipynb")
    with pytest.raises(book.BookError, match="stopped on an error"):
        book.stage_book(REPO / "book", tmp_path, [ch])


# ---- a failing chapter fails the command with papermill's error -------------------------------
@pytest.mark.notebooks
def test_failing_chapter_fails_the_command(tmp_path, capsys, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Broken"),
        nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise ZeroDivisionError('chapter is broken')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "01_broken.ipynb")
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        notebooks="notebooks",
        build_dir="build",
        results="results",
        book_src=str(REPO / "book"),
        only=None,
        param=None,
        device="cpu",
        smoke=True,
        seed=None,
        skip_execute=False,
        no_html=False,
        cell_timeout=60,
        allow_warnings=False,
    )
    assert book.run(args) == 1
    err = capsys.readouterr().err
    assert "01_broken failed" in err and "ZeroDivisionError" in err and "chapter is broken" in err


# ---- the smoke run of every chapter and the book build ----------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    started = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cam_core",
            "book",
            "--smoke",
            "--device",
            "cpu",
            "--build-dir",
            str(out / "build"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # a smoke run takes minutes; on a shared, overloaded 2-core machine much longer
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    index = out / "build" / "_build" / "html" / "index.html"
    assert f"open {index}" in proc.stdout
    return {
        "root": out,
        "html": index.parent,
        "results": out / "build" / "results",  # a smoke run's own folder, never the book's results/
        "started": started,
        "stdout": proc.stdout,
    }


def _page(built, chapter: book.Chapter) -> str:
    path = built["html"] / "notebooks" / f"{chapter.name}.html"
    assert path.is_file(), f"no page for {chapter.name}"
    return path.read_text()


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


#: what a page shows where an object had no HTML/Markdown to show: ``<IPython.core.display.Markdown object>``
RAW_REPR = re.compile(r"<[A-Za-z_][\w.]* object(?: at 0x[0-9a-fA-F]+)?>")


@pytest.mark.notebooks
def test_every_chapter_page_has_tables_and_figures(built):
    assert (built["html"] / "index.html").is_file()
    for c in CHAPTERS:
        page = _page(built, c)
        assert "Traceback" not in page, f"{c.name}: an error output is on the page"
        raw = RAW_REPR.search(_text(page))
        assert raw is None, f"{c.name}: a raw object repr is on the page: {raw.group(0) if raw else ''}"
        assert re.search(r"<img [^>]*src=\"[^\"]*_images/", page), f"{c.name}: no figure"
        assert "<table" in page, f"{c.name}: no table"
        assert re.search(r"Fig\. \d+", _text(page)), f"{c.name}: no numbered figure caption"
    log = (built["html"] / "run_log.html").read_text()
    for c in CHAPTERS:
        assert c.name in log
    assert "SMOKE=True" in html.unescape(log)


@pytest.mark.notebooks
def test_pages_show_this_run_and_no_machine_paths_or_nan(built):
    """No page shows the repository's absolute path or "nan" in its prose; the run log gives the
    device the run resolved and the versions it ran with; the repository's results/ is untouched."""
    pages = [built["html"] / "index.html", built["html"] / "run_log.html",
             *sorted((built["html"] / "notebooks").glob("*.html"))]
    for page in pages:
        text = _visible_text(page.read_text())
        assert str(REPO) not in text, f"{page.name} shows the machine's path {REPO}"
        found = re.search(r".{60}\bnan\b.{60}", text, flags=re.I | re.S)
        assert found is None, f"{page.name}: 'nan' in the prose: {found.group(0) if found else ''}"
    log = _visible_text((built["html"] / "run_log.html").read_text())
    assert re.search(r"Device: cpu\.", log) and "torch " in log and "cam_core " in log
    assert not any(p.stat().st_mtime >= built["started"] for p in (REPO / "results").glob("*"))


@pytest.mark.notebooks
def test_results_files_are_from_this_run(built):
    files = sorted(built["results"].glob("*.csv"))
    assert files, "the chapters saved no results"
    for f in files:
        assert f.stat().st_mtime >= built["started"] - 1
    for c in CHAPTERS:
        assert any(f.name.startswith(c.name) for f in files), f"{c.name} saved no results file"


def _table_cells(page: str) -> set[str]:
    """The numbers of the page's tables, each a whole cell (or the leading number of a cell that
    also shows an interval, ``25.2 [24.1, 26.3]``): "5.2" does not match inside "25.2"."""
    out = set()
    for cell in re.findall(r"<t[dh]\b[^>]*>(.*?)</t[dh]>", page, flags=re.S):
        text = html.unescape(re.sub(r"<[^>]+>", " ", cell)).strip()
        if text:
            out.add(text)
            out.add(text.split()[0])
    return out


def _fmt_all(values, fmt: str) -> list[str]:
    return [fmt.format(v) for v in values if pd.notna(v)]


@pytest.mark.notebooks
def test_theory_numbers_shown_are_the_saved_ones(built):
    page = _text(_page(built, next(c for c in CHAPTERS if c.name == "01_theory")))
    saved = pd.read_csv(built["results"] / "01_theory.csv")
    shown = _fmt_all(saved["cosine to phi (mean)"], "{:.3g}")
    # each as a whole number on the page (not a piece of a longer one: "0.98" inside "0.985")
    missing = [s for s in shown if not re.search(rf"(?<![\d.]){re.escape(s)}(?!\.?\d)", page)]
    assert shown and not missing, missing
    lift = saved[saved["method"] == "LIFT-CAM"].set_index("head")["cosine to phi (mean)"]
    assert f"mean cosine similarity {lift.iloc[1]:.3f}" in " ".join(page.split())


@pytest.mark.notebooks
@pytest.mark.parametrize(
    "chapter,table",
    [
        ("04_faithfulness", 3),
        ("04_faithfulness", 4),
        ("05_localization", 5),
        ("02_shap_validation", 1),
        ("03_lift_approximation", 2),
        ("06_vqa", 6),
    ],
)
def test_paper_tables_show_this_runs_numbers(built, chapter, table):
    """The measured column of each paper-vs-measured table is exactly the run's saved summary."""
    chapters = {c.name: c for c in CHAPTERS}
    cells = _table_cells(_page(built, chapters[chapter]))
    saved = pd.read_csv(built["results"] / f"{chapter}_summary.csv")
    if "table" in saved.columns:
        saved = saved[saved["table"] == table]
    cmp = paper.compare(saved, table=table)
    checked = 0
    for metric in dict.fromkeys(cmp.columns.get_level_values(0)):
        dec = paper.DECIMALS[metric]
        for v in cmp[(metric, "measured")].dropna():
            shown = f"{v:.{dec}f}"
            assert shown in cells, f"{chapter}: {metric} value {shown} is in no table cell of the page"
            checked += 1
    assert checked > 0


# ---- the math renders offline, in a real browser ----------------------------------------------
#: flags that keep Chromium off the network: every host name resolves to nothing, no background traffic
OFFLINE_CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--host-resolver-rules=MAP * ~NOTFOUND"]


def _browser() -> str | None:
    """Debian's chromium (``make test`` installs it as root), or ``$CAM_CORE_BROWSER``."""
    return os.environ.get("CAM_CORE_BROWSER") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render_offline(page: Path, workdir: Path, budget_ms: int = 20000) -> str:
    """The DOM of ``page`` (a file:// page) after headless Chromium ran its scripts with the network off."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium to open the built pages in: `make test` installs Debian's chromium when "
                    "run as root (apt-get install chromium); otherwise install it or set CAM_CORE_BROWSER")
    proc = subprocess.run([browser, *OFFLINE_CHROMIUM, f"--user-data-dir={workdir}",
                           f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _visible_text(dom: str) -> str:
    """The text a reader sees: scripts, styles and code blocks (``<pre>``) left out."""
    dom = re.sub(r"<(script|style|pre)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.notebooks
def test_math_renders_offline_in_a_browser(built, tmp_path):
    """Every page with math: MathJax (shipped inside the build) typeset it with no network, in headings too,
    and no raw ``\\(``, ``\\[`` or ``$$`` is left in the text. Run alone with
    ``pytest tests/test_book.py -k offline`` (builds the smoke book first)."""
    pages = [built["html"] / "intro.html", *sorted((built["html"] / "notebooks").glob("*.html"))]
    assert (built["html"] / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not in the build"
    checked = 0
    for page in pages:
        source = page.read_text()
        online = "cdn.jsdelivr.net" in source or "mathjax@" in source
        assert not online, f"{page.name} loads MathJax from the internet"
        if 'class="math' not in source:
            continue
        dom = render_offline(page, tmp_path / f"profile-{page.stem}")
        assert "<mjx-container" in dom, f"{page.name}: no math was typeset offline"
        text = _visible_text(dom)
        for raw in ("\\(", "\\[", "$$"):
            at = text.find(raw)
            assert at < 0, f"{page.name}: raw {raw!r} left on the page: ...{text[max(at - 80, 0):at + 80]}"
        checked += 1
    assert checked >= 3, "fewer than 3 pages carry math"


#: the reader's window: a laptop screen
WINDOW = (1280, 900)
#: run in the page once it has loaded: the width of the text column, and each table wider than it, and the
#: visible text of the article (to look for raw reprs as a reader sees them); written into the DOM as JSON
_MEASURE_JS = r"""
<script>
(function () {
var done = false;
function measure() {
  if (done) return;
  done = true;
  var out = document.createElement("pre");
  out.id = "cam-core-layout";
  try {
    var column = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    var width = column.clientWidth, wide = [];
    // a table must end inside the box that holds it (a cell's output area scrolls, and clips, what does not),
    // and that box inside the window
    document.querySelectorAll("article table, main table").forEach(function (t, i) {
      var box = t.closest(".cell_output, .output, .table-wrapper, section, article") || column;
      var r = t.getBoundingClientRect(), limit = Math.min(box.getBoundingClientRect().right, window.innerWidth);
      if (r.right > limit + 1) {
        var caption = t.caption ? t.caption.innerText : (t.querySelector("th") || t).innerText;
        wide.push({index: i, width: Math.ceil(r.width), over: Math.ceil(r.right - limit), start: caption.slice(0, 80)});
      }
    });
    var page_wider = document.documentElement.scrollWidth > window.innerWidth + 1;
    // an interval cell ("0.53 [0.26, 0.80]") broken over two lines is as unreadable as a table too wide
    var broken = [];
    document.querySelectorAll("article td").forEach(function (td) {
      var text = td.innerText.trim();
      if (/^\S+ \[\S+, \S+\]$/.test(text)) {
        var line = parseFloat(getComputedStyle(td).lineHeight) || 1.2 * parseFloat(getComputedStyle(td).fontSize);
        var range = document.createRange();
        range.selectNodeContents(td);
        if (range.getClientRects().length > 1 || range.getBoundingClientRect().height > 1.5 * line) broken.push(text);
      }
    });
    out.textContent = JSON.stringify({column: width, tables: document.querySelectorAll("article table").length,
                                      wide: wide, page_wider: page_wider, broken: broken.slice(0, 5),
                                      n_broken: broken.length, text: column.innerText});
  } catch (e) { out.textContent = JSON.stringify({error: String(e)}); }  // say why, not "did not run"
  document.body.appendChild(out);
}
window.addEventListener("load", function () { setTimeout(measure, 500); });
// a resource that is slow to load (a font, MathJax on a busy machine) must not keep the probe from running
setTimeout(measure, 10000);
})();
</script>
"""


def measure_layout(page: Path, workdir: Path) -> dict:
    """Open ``page`` as a reader does (headless Chromium, ``WINDOW``, network off) and return the text
    column's width in CSS pixels, every table wider than it (``wide``) and the article's visible text;
    a screenshot of the page's first screen is left in ``workdir``."""
    import json

    browser = _browser()
    if browser is None:
        render_offline(page, workdir)  # skips with the reason
    probe = page.with_name(f"_layout_{page.name}")  # beside the page: its relative links still resolve
    probe.write_text(page.read_text().replace("</body>", _MEASURE_JS + "</body>"))
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    try:
        # Chromium on a loaded 2-core machine now and then dumps the DOM before the page's timers ran: try
        # again (a fresh profile each time) before calling the page broken, and say what came back
        tries = []
        for attempt in range(3):
            dom = subprocess.run([browser, *OFFLINE_CHROMIUM, f"--user-data-dir={workdir / f'profile{attempt}'}",
                                  size, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
                                 capture_output=True, text=True, timeout=120)
            assert dom.returncode == 0, dom.stderr[-2000:]
            found = re.search(r'<pre id="cam-core-layout">(.*?)</pre>', dom.stdout, flags=re.S)
            if found:
                break
            tries.append(f"try {attempt + 1}: {len(dom.stdout)} characters of DOM, "
                         f"{'with' if '</html>' in dom.stdout else 'without'} </html>; stderr: {dom.stderr[-300:]!r}")
        shot = subprocess.run([browser, *OFFLINE_CHROMIUM, f"--user-data-dir={workdir / 'profile'}", size,
                               "--virtual-time-budget=20000", f"--screenshot={workdir / (page.stem + '.png')}",
                               page.as_uri()], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-2000:]
    finally:
        probe.unlink()
    assert found, f"{page.name}: the layout probe did not run in 3 tries:\n" + "\n".join(tries)
    layout = json.loads(html.unescape(found.group(1)))
    assert "error" not in layout, f"{page.name}: the layout probe failed: {layout['error']}"
    return layout


@pytest.mark.notebooks
def test_chapters_look_right_in_a_browser(built, tmp_path):
    """Each chapter page, opened in Chromium at 1280 x 900: every table fits the text column (no sideways
    scrolling to read a number: each table ends inside the output box that holds it, and the page inside the
    window), no "mean [low, high]" cell is broken over two lines, and the text a reader
    sees has no raw object repr. A screenshot of each
    page is taken (kept with ``CAM_CORE_SCREENSHOTS=<folder>``). Run alone with
    ``pytest tests/test_book.py -k browser`` (builds the smoke book first)."""
    keep = os.environ.get("CAM_CORE_SCREENSHOTS")
    problems = []
    for c in CHAPTERS:
        work = tmp_path / c.name
        work.mkdir()
        layout = measure_layout(built["html"] / "notebooks" / f"{c.name}.html", work)
        assert layout["tables"] > 0, f"{c.name}: no table on the page"
        problems += [f"{c.name}: table {t['index']} ({t['start']!r}...) is {t['width']} px wide and ends {t['over']} "
                     f"px beyond its box (text column {layout['column']} px)" for t in layout["wide"]]
        if layout["page_wider"]:
            problems.append(f"{c.name}: the page is wider than the {WINDOW[0]}-px window (it scrolls sideways)")
        if layout["n_broken"]:
            problems.append(f"{c.name}: {layout['n_broken']} interval cells are broken over two lines, e.g. "
                            f"{layout['broken']}")
        raw = RAW_REPR.search(layout["text"])
        if raw:
            problems.append(f"{c.name}: a raw object repr is on the page: {raw.group(0)}")
        assert (work / f"{c.name}.png").stat().st_size > 10_000, f"{c.name}: the screenshot is empty"
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(work / f"{c.name}.png", Path(keep) / f"{c.name}.png")
    assert not problems, "\n".join(problems)
