"""The chapters' claims come from paired tests after Holm: "better" only where significant."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cam_core.book import claims
from cam_core.evaluation import statistics as S


def frame(values: dict[str, np.ndarray], metric: str, bench: str) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"image": np.arange(len(v)), "method": m, "metric": metric, "value": v,
                                    "benchmark": bench}) for m, v in values.items()], ignore_index=True)


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 200)
    lift = base + rng.normal(0, 0.02, 200)
    z = rng.normal(0, 0.02, 100)
    # AD (lower is better): LIFT-CAM clearly below Grad-CAM, equal in mean to Score-CAM, above Ablation-CAM
    df = frame({"LIFT-CAM": lift, "Grad-CAM": lift + 0.05 + rng.normal(0, 0.02, 200),
                "Score-CAM": lift + np.concatenate([z, -z]),
                "Ablation-CAM": lift - 0.05 + rng.normal(0, 0.02, 200),
                "Box": base - 0.3}, "AD", "shapes-single")
    return S.paired_table(df, "LIFT-CAM", others=["Grad-CAM", "Score-CAM", "Ablation-CAM"])


def test_headline_counts_verdicts(pairs):
    assert list(pairs["b"]) == ["Grad-CAM", "Score-CAM", "Ablation-CAM"]  # the sanity map is left out
    text = claims.headline(pairs)
    assert "Over the 3 paired comparisons" in text
    assert "**better in 1**, indistinguishable in 1 and worse in 1" in text


def test_held_says_better_only_where_significant_and_checks_the_paper(pairs):
    text = claims.held(pairs, table=3)
    assert text.startswith("- `shapes-single`, **AD** (lower is better): LIFT-CAM is better than "
                           "Grad-CAM (-5")
    assert "worse than Ablation-CAM (+5" in text
    assert "indistinguishable from Score-CAM." in text
    assert "better than Score-CAM" not in text
    # Table 3, ImageNet AD: the paper has LIFT-CAM (29.15) below all three; 1 confirmed, 1 open, 1 not
    assert "Of the paper's 3 orderings of these pairs: 1 confirmed, 1 not resolved, 1 contradicted." in text
    assert "Of the paper's" not in claims.held(pairs)  # no table: no paper comparison


def test_claims_need_a_paired_table():
    with pytest.raises(ValueError, match="paired_table"):
        claims.held(pd.DataFrame({"metric": ["AD"]}))
    empty = S.paired_table(frame({"LIFT-CAM": np.ones(3)}, "AD", "b"), "LIFT-CAM")
    assert claims.headline(empty).startswith("_No paired")


def test_table_shows_each_comparison_in_one_line_with_its_interval():
    """claims.table: "d [low, high]" in one cell, the Holm p-value and verdict; a named outer level kept."""
    import pandas as pd

    from cam_core.book import claims

    pairs = pd.DataFrame({"benchmark": ["b", "b"], "metric": ["cosine", "cosine"], "a": ["LIFT-CAM"] * 2,
                          "b": ["Grad-CAM", "XGrad-CAM"], "difference": [0.5, -0.01], "ci_low": [0.4, -0.03],
                          "ci_high": [0.6, 0.01], "p_holm": [0.001, 0.6],
                          "verdict": ["better", "indistinguishable"]})
    both = pd.concat({"last block": pairs, "inner block": pairs}, names=["layer"])
    shown = claims.table(both)
    assert list(shown.index.names) == ["layer"] and len(shown) == 4
    assert "benchmark" not in shown.columns  # one benchmark: said once, by the caption
    assert shown.iloc[0]["a - b [95% CI]"] == "+0.5 [+0.4, +0.6]"
    assert shown.iloc[1]["p (Holm)"] == "0.6" and shown.iloc[1]["verdict"] == "indistinguishable"
