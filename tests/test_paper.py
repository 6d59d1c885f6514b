"""cam_core.book.paper: the paper's tables as data, and the paper-vs-measured comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cam_core.book import paper

METHODS6 = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM"]


def _wide(number: int, dataset: str) -> pd.DataFrame:
    t = paper.table(number)
    return t[t.dataset == dataset].pivot(index="method", columns="metric", values="value")


# ---- the data: shapes, and claims the paper's text makes about its own tables ---------------
def test_table_shapes():
    assert len(paper.table(1)) == 3 * 3 * 3
    assert len(paper.table(2)) == 6 * 3
    assert len(paper.table(3)) == 6 * 3 * 3
    assert len(paper.table(4)) == 6 * 2
    assert len(paper.table(5)) == 6
    assert len(paper.table(6)) == 2 * 3
    assert paper.table(3).attrs["caption"].startswith("Faithfulness")
    with pytest.raises(ValueError, match="Tables 1..6"):
        paper.table(7)


def test_spot_values_from_digest():
    t3 = paper.table(3).set_index(["dataset", "method", "metric"])["value"]
    assert t3[(paper.VOC, "LIFT-CAM", "IC")] == 38.7
    assert t3[(paper.COCO, "Score-CAM", "ADD")] == 17.35
    assert paper.table(4).set_index(["method", "metric"])["value"][("Ablation-CAM", "deletion")] == 0.0873
    assert paper.table(6).set_index(["method", "metric"])["value"][("LIFT-CAM", "AD")] == 14.14


@pytest.mark.parametrize("dataset", paper.DATASETS)
def test_table1_improves_with_orderings(dataset):
    """Section 4.1: 'as |Pi| increases, the IC and ADD increase and the AD decreases'."""
    w = _wide(1, dataset).loc[["SHAP-CAM_1", "SHAP-CAM_10", "SHAP-CAM_100"]]
    assert w["IC"].is_monotonic_increasing and w["ADD"].is_monotonic_increasing
    assert w["AD"].is_monotonic_decreasing


@pytest.mark.parametrize("dataset", paper.DATASETS)
def test_shapcam100_beats_every_table3_method(dataset):
    """Section 4.1: 'even compared to the other CAMs (see Table 3), SHAP-CAM_100 shows the best performances
    for all cases'."""
    s = _wide(1, dataset).loc["SHAP-CAM_100"]
    t3 = _wide(3, dataset)
    assert (s["IC"] > t3["IC"]).all() and (s["ADD"] > t3["ADD"]).all() and (s["AD"] < t3["AD"]).all()


@pytest.mark.parametrize("dataset", paper.DATASETS)
def test_table2_lift_closest_then_ablation(dataset):
    cos = _wide(2, dataset)["cosine"].sort_values(ascending=False)
    assert list(cos.index[:2]) == ["LIFT-CAM", "Ablation-CAM"]


def test_paper_column():
    assert paper.paper_column("shapes-single") == paper.IMAGENET
    assert paper.paper_column("voc2007") == paper.VOC
    assert paper.paper_column("COCO 2014") == paper.COCO
    with pytest.raises(ValueError, match="no column"):
        paper.paper_column("mnist")


# ---- compare ----------------------------------------------------------------------------------
def test_compare_difference_is_measured_minus_paper():
    measured = _wide(3, paper.IMAGENET) + 1.5
    cmp = paper.compare(measured, table=3, benchmark="shapes-single")
    assert list(cmp.columns.get_level_values(0).unique()) == ["IC", "AD", "ADD"]
    assert list(cmp.columns.get_level_values(1)[:3]) == ["paper", "measured", "difference"]
    assert cmp.index.names == ["dataset", "benchmark", "method"]
    assert list(cmp.index.get_level_values("method")) == METHODS6  # the paper's order
    for m in ("IC", "AD", "ADD"):
        np.testing.assert_allclose(cmp[(m, "difference")], 1.5)
        np.testing.assert_allclose(cmp[(m, "measured")] - cmp[(m, "paper")], 1.5)
    assert cmp.attrs["table"] == 3


def test_compare_input_forms_agree():
    a = _wide(3, paper.IMAGENET) * 0.5
    b = _wide(3, paper.VOC) * 2.0
    from_mapping = paper.compare({"shapes-single": a, "shapes-multi": b}, table=3)
    long = pd.concat([
        a.reset_index().melt(id_vars="method", var_name="metric").assign(benchmark="shapes-single"),
        b.reset_index().melt(id_vars="method", var_name="metric").assign(benchmark="shapes-multi"),
    ])
    from_long = paper.compare(long, table=3)
    pd.testing.assert_frame_equal(from_mapping, from_long)
    assert list(from_mapping.index.get_level_values("dataset").unique()) == [paper.IMAGENET, paper.VOC]


def test_compare_extra_method_and_metric():
    measured = pd.DataFrame({"energy": [40.0, 60.0], "IC": [1.0, 2.0]}, index=["LIFT-CAM", "CAM"])
    cmp = paper.compare(measured, table=5, benchmark="shapes-single")
    assert list(cmp.columns.get_level_values(0).unique()) == ["energy"]  # IC is not in Table 5
    assert cmp.loc[(paper.IMAGENET, "shapes-single", "LIFT-CAM"), ("energy", "paper")] == 52.43
    assert np.isnan(cmp.loc[(paper.IMAGENET, "shapes-single", "CAM"), ("energy", "paper")])


def test_compare_errors():
    with pytest.raises(ValueError, match="which benchmark"):
        paper.compare(_wide(3, paper.IMAGENET), table=3)
    with pytest.raises(ValueError, match="none of Table 4"):
        paper.compare(_wide(3, paper.IMAGENET), table=4, benchmark="shapes-single")


# ---- ranking, style ---------------------------------------------------------------------
def test_kendall_tau_hand_values():
    assert paper.kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert paper.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert paper.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert np.isnan(paper.kendall_tau([1], [1]))


def test_ranking_when_measured_equals_paper():
    cmp = paper.compare(_wide(3, paper.IMAGENET), table=3, benchmark="shapes-single")
    rk = paper.ranking(cmp)
    assert (rk["kendall_tau"] == 1.0).all()
    assert (rk["paper_best"] == rk["measured_best"]).all()
    assert (rk["LIFT-CAM rank (measured)"] == 1).all()  # LIFT-CAM is the paper's best on ImageNet, Table 3


def test_ranking_reversed_and_lower_is_better():
    w = _wide(3, paper.IMAGENET)
    reversed_ = -w  # every ordering flips
    rk = paper.ranking(paper.compare(reversed_, table=3, benchmark="shapes-single")).set_index("metric")
    assert (rk["kendall_tau"] == -1.0).all()
    assert rk.loc["AD", "measured_best"] == w["AD"].idxmax()  # lower is better: the most negative wins
    assert rk.loc["AD", "LIFT-CAM rank (measured)"] == 6


def test_style_shows_intervals_in_one_cell_without_colours_and_bolds_best():
    """No ``difference`` column and no red/green: a synthetic benchmark's number and the paper's ImageNet
    number are not one quantity; this run's cell is ``"mean [low, high]"``; the best CAM per column bold."""
    w = _wide(3, paper.IMAGENET).copy()
    w["IC"] += 1.0
    long = w.reset_index().melt(id_vars="method", var_name="metric", value_name="mean")
    long["ci_low"], long["ci_high"] = long["mean"] - 0.5, long["mean"] + 0.5
    cmp = paper.compare(long.assign(benchmark="shapes-single"), table=3)
    sty = paper.style(cmp)
    html = sty.to_html()
    shown = paper.styling.cells(cmp)
    assert list(dict.fromkeys(shown.columns.get_level_values(1))) == ["paper", "this run"]
    lift = list(cmp.index.get_level_values("method")).index("LIFT-CAM")
    ad = float(cmp[("AD", "measured")].iloc[lift])
    assert shown[("AD", "this run")].iloc[lift] == f"{ad:.2f} [{ad - 0.5:.2f}, {ad + 0.5:.2f}]"
    assert "background" not in html and "difference" not in html and "white-space: nowrap" in html
    ctx = sty._compute().ctx  # {(row, col): [(prop, value)]}
    col = list(shown.columns).index(("AD", "this run"))
    assert dict(ctx[(lift, col)]).get("font-weight") == "bold"
    assert paper.CAPTIONS[3] in html


def test_paper_favours_reads_the_papers_means_in_each_metrics_direction():
    assert paper.paper_favours(6, "LIFT-CAM", "Grad-CAM") == ["IC", "AD", "ADD"]  # AD: lower is better
    assert paper.paper_favours(6, "Grad-CAM", "LIFT-CAM") == []
    assert "IC" in paper.paper_favours(3, "LIFT-CAM", "Grad-CAM", dataset=paper.IMAGENET)
    with pytest.raises(ValueError, match="pass dataset="):
        paper.paper_favours(3, "LIFT-CAM", "Grad-CAM")
    with pytest.raises(ValueError, match="has no Foo-CAM"):
        paper.paper_favours(6, "Foo-CAM", "Grad-CAM")


# ---- convergence helpers (chapters 01 and 02) -------------------------------------------------
def test_convergence_of_a_known_estimator():
    import torch

    ref = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))

    def estimate(p: int, seed: int) -> torch.Tensor:  # error exactly 0.3 |ref| / sqrt(p) in norm
        noise = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed))
        noise = noise / noise.norm(dim=1, keepdim=True) * ref.norm(dim=1, keepdim=True)
        return ref + 0.3 * noise / p**0.5

    curve = paper.convergence(estimate, ref, orderings=[1, 4, 16, 64], seeds=[0, 1])
    assert list(curve.columns) == ["orderings", "seed", "image", "rel_error", "cosine"]
    assert len(curve) == 4 * 2 * 5
    np.testing.assert_allclose(curve["rel_error"], 0.3 / np.sqrt(curve["orderings"]), rtol=1e-6)
    assert paper.loglog_slope(curve) == pytest.approx(-0.5, abs=1e-6)
    assert (curve.groupby("orderings")["cosine"].mean().diff().dropna() > 0).all()
    # errors 0.3, 0.15, 0.075, 0.0375: the first P at least as close as an estimate of error 0.1 is 16
    assert paper.orderings_to_match(curve, 0.1) == 16
    assert paper.orderings_to_match(curve, 0.31) == 1
    assert paper.orderings_to_match(curve, 0.01) is None
    import cam_core as cc

    np.testing.assert_allclose(cc.metrics.relative_error(estimate(4, 0), ref).numpy(), 0.15, rtol=1e-6)
    fig = paper.plot_convergence(curve)
    assert fig.axes[0].get_xscale() == "log"


def test_convergence_shape_mismatch():
    import torch

    with pytest.raises(ValueError, match="reference is"):
        paper.convergence(lambda p, s: torch.zeros(2, 3), torch.ones(2, 4), [1], [0])


def test_plot_maps_layout_and_errors():
    import torch

    x = torch.rand(3, 3, 16, 16)
    maps = {"A": torch.rand(3, 16, 16), "B": torch.rand(3, 16, 16)}
    boxes = [torch.tensor([[1.0, 2.0, 8.0, 9.0]]), torch.zeros(0, 4),
             torch.tensor([[0.0, 0, 16, 16], [2, 2, 4, 4]])]
    fig = paper.plot_maps(x, maps, boxes=boxes, titles=["a", "b", "c"], mean=torch.zeros(3),
                          std=torch.ones(3))
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "A", "B"]
    assert len(fig.axes[-1].patches) == 2 and len(fig.axes[3].patches) == 0
    with pytest.raises(ValueError, match="must be"):
        paper.plot_maps(x, {"A": torch.rand(2, 16, 16)})


def test_caption_says_what_this_run_measured_and_prose_has_no_nan():
    """Table 4 has only an ImageNet column: on shapes-multi (VOC's stand-in) the paper reports nothing."""
    rows = [{"benchmark": b, "method": m, "metric": k, "mean": v, "n": 60}
            for b in ("shapes-single", "shapes-multi") for m, v in zip(METHODS6, range(6), strict=True)
            for k in ("insertion", "deletion")]
    cmp = paper.compare(pd.DataFrame(rows), table=4)
    caption = cmp.attrs["caption"]
    assert caption.startswith("The paper: Insertion and deletion AUC, VGG16, ImageNet, 1,000 images.")
    assert caption.endswith("This run: shapes-single, shapes-multi; 60 images per method and metric.")
