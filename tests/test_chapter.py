"""cam_core.book.chapter: the checks every chapter runs before it measures anything, and where results go."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cam_core.book import chapter
from cam_core.evaluation import results

REPO = Path(__file__).resolve().parents[1]


def test_check_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError, match="no parameter BENCHMARKS; its parameters are BENCHMARK, DATA_DIR"):
        chapter.check({"BENCHMARKS": "imagenet"}, declared=["BENCHMARK", "DATA_DIR"])


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "10"])
def test_check_rejects_sizes_that_are_not_positive_integers(value):
    with pytest.raises(ValueError, match="N_IMAGES=.* must be a positive integer"):
        chapter.check({"N_IMAGES": value})
    chapter.check({"N_IMAGES": None, "BATCH_SIZE": 4, "AUC_STEPS": 1})


def test_check_rejects_data_dir_for_the_embedded_benchmark():
    with pytest.raises(ValueError, match="DATA_DIR='/data/imagenet' is given, but BENCHMARK shapes-single"):
        chapter.check({"BENCHMARK": "shapes-single", "DATA_DIR": "/data/imagenet"})
    chapter.check({"BENCHMARK": "imagenet", "DATA_DIR": "/data/imagenet"})
    chapter.check({"BENCHMARK": "shapes-single", "DATA_DIR": None})


def test_injected_parameters_are_read_from_the_kernel_history():
    history = ["", "N_IMAGES = None\nSMOKE = False", "# Parameters\nN_IMAGES = 10\nBENCHMARKS = 'x'\n",
               "run()"]
    assert chapter.injected_parameters(history) == (["N_IMAGES", "SMOKE"], ["N_IMAGES", "BENCHMARKS"])
    assert chapter.injected_parameters(["", "N_IMAGES = None"]) is None
    ns = {"N_IMAGES": 10, "SMOKE": False, "BENCHMARKS": "x", "DEVICE": "cpu"}
    with pytest.raises(ValueError, match="no parameter BENCHMARKS"):
        chapter.start(ns, history=history)


@pytest.fixture
def restore_results_env():
    old = os.environ.get(results.ENV_VAR)
    yield
    if old is None:
        os.environ.pop(results.ENV_VAR, None)
    else:
        os.environ[results.ENV_VAR] = old


def test_smoke_fills_only_what_was_not_given(restore_results_env, capsys):
    ns = {"DEVICE": "cpu", "SMOKE": True, "N_IMAGES": 10, "BATCH_SIZE": None, "N_FIGURE": None,
          "RESULTS_DIR": None}
    run = chapter.start(ns, cpu={"N_IMAGES": 300, "BATCH_SIZE": 32, "N_FIGURE": 4},
                        smoke={"N_IMAGES": 4, "BATCH_SIZE": 4}, history=[])
    assert ns["N_IMAGES"] == 10  # given: kept, SMOKE or not
    assert ns["BATCH_SIZE"] == 4  # not given: the smoke size
    assert ns["N_FIGURE"] == 4  # no smoke size: the CPU one
    assert run.device.type == "cpu" and run.sizes == {"BATCH_SIZE": 4, "N_FIGURE": 4}
    ns = {"DEVICE": "cpu", "SMOKE": False, "N_IMAGES": None, "RESULTS_DIR": None}
    chapter.start(ns, cpu={"N_IMAGES": 300}, cuda={"N_IMAGES": 1000}, smoke={"N_IMAGES": 4}, history=[])
    assert ns["N_IMAGES"] == 300
    capsys.readouterr()


def test_interactive_runs_never_write_into_the_books_results(restore_results_env, capsys):
    """RESULTS_DIR = None (a chapter opened in Jupyter) writes to build/scratch/results, and says so."""
    chapter.start({"DEVICE": "cpu", "RESULTS_DIR": None}, history=[])
    out = capsys.readouterr().out
    assert Path(os.environ[results.ENV_VAR]) == REPO / "build" / "scratch" / "results"
    assert results.results_dir() != REPO / "results"
    assert "build/scratch/results (a scratch folder, in the repository)" in out and str(REPO) not in out
    chapter.start({"DEVICE": "cpu", "RESULTS_DIR": "results"}, history=[])
    assert "results go to results (the book's results, in the repository)" in capsys.readouterr().out


def test_book_runner_checks_every_chapter_first_and_smoke_runs_keep_their_own_results(
        tmp_path, monkeypatch, capsys):
    """A wrong parameter stops the command before any chapter runs (no build folder appears); a smoke
    run's results go to BUILD_DIR/results, a full run's to results/."""
    from cam_core.book import build as book
    from cam_core.cli import build_parser

    seen = {}

    def fake_execute(c, output, params, **kw):
        seen[c.name] = params
        raise book.BookError("stop here")

    monkeypatch.setattr(book, "execute_chapter", fake_execute)
    monkeypatch.chdir(REPO)
    parser = build_parser()
    build = tmp_path / "build"
    cases = {
        ("-p", "BENCHMARKS", "imagenet"): "no chapter to run declares it; the parameters are BENCHMARK",
        ("-p", "DATA_DIR", "/data/imagenet"): "DATA_DIR='/data/imagenet' is given, but BENCHMARK",
        ("-p", "N_IMAGES", "-5"): "N_IMAGES=-5 must be a positive integer",
        ("-p", "04:N_IMAGES", "0"): "N_IMAGES=0 must be a positive integer",
    }
    for args, message in cases.items():
        assert book.run(parser.parse_args(["book", *args, "--build-dir", str(build), "--no-html"])) == 1
        assert message in capsys.readouterr().err, args
        assert not build.exists() and not seen
    assert book.run(parser.parse_args(["book", "--smoke", "--only", "01", "--build-dir", str(build)])) == 1
    assert seen["01_theory"]["RESULTS_DIR"] == str(build / "results")
    book.run(parser.parse_args(["book", "--only", "01", "--build-dir", str(build)]))
    assert seen["01_theory"]["RESULTS_DIR"] == "results"


def test_check_images_names_the_size_and_the_benchmark():
    class Bench:
        name = "tiny"

        def subset(self):  # a benchmark-like object
            return []

        def __len__(self):
            return 20

    chapter.check_images(Bench(), N_IMAGES=20)
    with pytest.raises(ValueError, match="N_IMAGES=21, but tiny holds 20 images"):
        chapter.check_images([Bench()], N_IMAGES=21)


@pytest.mark.notebooks
def test_a_chapter_run_by_papermill_rejects_an_unknown_parameter(tmp_path):
    """The real kernel history: papermill's injected cell is checked against the chapter's own."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"),
                nbformat.v4.new_code_cell("N_IMAGES = None\nDEVICE = 'cpu'\nRESULTS_DIR = None",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import cam_core as cc\n"
                                          "run = cc.chapter.start(globals(), cpu={'N_IMAGES': 3})\n"
                                          "print('N_IMAGES', N_IMAGES)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "01_x.ipynb"
    nbformat.write(nb, src)
    out = pm.execute_notebook(str(src), str(tmp_path / "ok.ipynb"), parameters={"N_IMAGES": 5},
                              kernel_name="python3", progress_bar=False, cwd=str(REPO))
    assert "N_IMAGES 5" in "".join(o.get("text", "") for o in out.cells[-1].outputs)
    with pytest.raises(PapermillExecutionError, match="no parameter BENCHMARKS"):
        pm.execute_notebook(str(src), str(tmp_path / "bad.ipynb"), parameters={"BENCHMARKS": "imagenet"},
                            kernel_name="python3", progress_bar=False, cwd=str(REPO))


@pytest.mark.parametrize(("name", "url"), [("imagenet", "image-net.org"), ("voc2007", "host.robots.ox.ac.uk"),
                                           ("coco2014", "cocodataset.org"), ("vqa2", "visualqa.org")])
def test_a_missing_data_folder_names_the_variable_and_where_to_download(name, url):
    import cam_core as cc

    with pytest.raises(FileNotFoundError, match=r"data_dir='/nope'") as err:
        cc.benchmarks.load(name, data_dir="/nope", device="cpu")
    assert url in str(err.value) and "DATA_DIR" in str(err.value)
