"""What the grader checks in a5_study, outside the student's process (see ``a1_gradcam.py``).

``RELEASE_FILES``: files of the repository released beside the notebook (the chapter it reruns), so
that the assignment runs from the released folder alone. ``CHECKS[test](got, expected)``: a check
of its own (a list of failures) where the default comparison does not fit.
"""

RELEASE_FILES = {"01_theory.ipynb": "notebooks/01_theory.ipynb"}

PROBES = {
    "test_rerun": """
executed = nbformat.read(scratch / CHAPTER.name, as_version=4)
export(results_type=type(results).__name__,
       inside=str(Path(results).resolve().relative_to(scratch.resolve())),
       curve=pd.read_csv(Path(results) / "01_theory_convergence.csv"),
       injected=[c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])])
""",
    "test_slope": """
toy = pd.DataFrame({"orderings": [1, 1, 100, 100], "seed": [0, 1, 0, 1], "image": [0, 0, 0, 0],
                    "rel_error": [1.0, 3.0, 0.2, 0.2], "cosine": [1.0] * 4})
export(measured=convergence_slope(curve), curve=curve[["orderings", "rel_error"]], toy=convergence_slope(toy))
""",
    "test_paired_t": """
export(measured=paired_t(cos_lift, cos_ablation))
rng = np.random.default_rng(0)
a, b = rng.normal(size=12), rng.normal(size=12)
export(random90=paired_t(a, b, confidence=0.9))
""",
    "test_verdict": """
export(above=verdict({"ci_low": 0.1, "ci_high": 0.3}), below=verdict({"ci_low": -0.3, "ci_high": -0.1}),
       across=verdict({"ci_low": -0.1, "ci_high": 0.3}),
       named=[verdict({"ci_low": 0.1, "ci_high": 0.3}, names=("a", "b")),
              verdict({"ci_low": -0.3, "ci_high": -0.2}, names=("a", "b"))],
       measured=verdict(result))
""",
}

ATOL = {"test_rerun": 1e-6, "test_slope": 1e-9, "test_paired_t": 1e-6}


def _rerun(got, expected):
    """The chapter ran with papermill's parameters into the scratch folder and measured the same curve."""
    from cam_core.book.course import compare

    failures = compare({k: got.get(k) for k in ("results_type", "inside", "curve")},
                       {k: expected[k] for k in ("results_type", "inside", "curve")}, 1e-6)
    injected = got.get("injected")
    if not (isinstance(injected, list) and injected and isinstance(injected[0], str)
            and "SEED = 1" in injected[0] and "RESULTS_DIR" in injected[0]):
        failures.append("the executed chapter has no papermill injected-parameters cell with SEED and RESULTS_DIR")
    return failures


def _slope(got, expected):
    """The slope of the student's own curve, as the book's helper computes it; and a known table."""
    import pandas as pd

    from cam_core.book.convergence import loglog_slope
    from cam_core.book.course import compare

    failures = compare(got.get("toy"), expected["toy"], 1e-9, "toy table")
    curve = got.get("curve")
    try:
        slope = loglog_slope(pd.DataFrame({"orderings": curve["orderings"], "rel_error": curve["rel_error"]}))
    except Exception:  # noqa: BLE001 -- whatever shape the exported table has
        return [*failures, "the measured curve is not a table of orderings and rel_error"]
    return failures + compare(got.get("measured"), slope, 1e-9, "slope of the measured curve")


CHECKS = {"test_rerun": _rerun, "test_slope": _slope}
