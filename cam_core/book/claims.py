r"""What a chapter may claim from a table: "better" only where a paired test says so after Holm.

The chapters' "what held" prose is written here, from :func:`cam_core.evaluation.statistics.paired_table`
(``method`` against each other method on each metric and benchmark of one table, p-values
Holm-corrected across the table), never from raw means::

    pairs = cc.evaluation.paired_table(tables, "LIFT-CAM", others=cc.PAPER_METHODS,
                                       metrics=["IC", "AD", "ADD"])
    display(Markdown(claims.headline(pairs) + "\n\n" + claims.held(pairs, table=3)))

"LIFT-CAM is better than X" appears only for a pair whose verdict is ``better``; a pair that the
test cannot separate is "indistinguishable", whatever its means. Where the benchmark stands in for
one of the paper's columns (:data:`cam_core.book.paper.PAPER_COLUMN`), each line also says whether the
paper's own ordering of the pair was confirmed, left unresolved, or contradicted.
"""
from __future__ import annotations

import pandas as pd

from cam_core.evaluation.statistics import with_ci
from cam_core.metrics import HIGHER_IS_BETTER, METRIC_FAMILIES

_NEEDED = {"benchmark", "metric", "a", "b", "difference", "ci_low", "ci_high", "p_holm", "verdict"}


def _check(pairs: pd.DataFrame) -> None:
    missing = _NEEDED - set(pairs.columns)
    if missing:
        raise ValueError(f"pairs lacks {sorted(missing)}: pass cc.evaluation.paired_table's output")


def _fmt(x: float) -> str:
    return f"{x:+.3g}"


def _paper_direction(table: int | None, benchmark: str, metric: str, a: str, b: str) -> str | None:
    """'better' / 'worse' / 'equal' for ``a`` vs ``b`` in the paper's Table ``table`` (None: no numbers)."""
    if table is None:
        return None
    from cam_core.book.paper import PAPER_COLUMN
    from cam_core.book.paper import table as paper_table

    column = PAPER_COLUMN.get(benchmark, benchmark)
    ref = paper_table(table)
    vals = ref[(ref["dataset"] == column) & (ref["metric"] == metric)].set_index("method")["value"]
    if a not in vals.index or b not in vals.index:
        return None
    d = float(vals[a] - vals[b])
    if d == 0:
        return "equal"
    return "better" if (d > 0) == HIGHER_IS_BETTER.get(metric, True) else "worse"


def family(metric: str) -> str:
    """The metric's family (:data:`cam_core.metrics.METRIC_FAMILIES`): ``approximation``, ``drop``,
    ``insertion-deletion`` or ``localization`` (the metric's own name for one outside them)."""
    return METRIC_FAMILIES.get(metric, metric)


def family_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """The verdicts counted per metric family: ``family, metrics, n, better, indistinguishable, worse``
    (families in order of first appearance). The headline reports these, never one pooled count: a
    win on a drop metric and a win on a localization metric are answers to different questions."""
    _check(pairs)
    rows = []
    fam = pairs["metric"].map(family)
    for name in dict.fromkeys(fam):
        part = pairs[fam == name]
        count = part["verdict"].value_counts()
        rows.append((name, ", ".join(dict.fromkeys(part["metric"])), len(part), int(count.get("better", 0)),
                     int(count.get("indistinguishable", 0)), int(count.get("worse", 0))))
    return pd.DataFrame(rows, columns=["family", "metrics", "n", "better", "indistinguishable", "worse"])


def headline(pairs: pd.DataFrame) -> str:
    """How often the method is better, indistinguishable, worse in the table's paired comparisons
    (Holm-corrected at the table's ``alpha``), counted per metric family (:func:`family_counts`), never
    pooled across families."""
    _check(pairs)
    if pairs.empty:
        return "_No paired comparisons (fewer than two methods measured)._"
    method = pairs["a"].iloc[0]
    alpha = pairs.attrs.get("alpha", 0.05)
    counts = family_counts(pairs)
    lead = (f"(paired tests over the same images, Holm-corrected across the table at a family-wise error of "
            f"{alpha:g})")
    if len(counts) == 1:
        c = counts.iloc[0]
        return (f"Over the {c['n']} paired comparisons of this table ({method} against each other method, per "
                f"metric and benchmark; {lead[1:-1]}), on the {c['family']} metrics ({c['metrics']}) {method} is "
                f"**better in {c['better']}**, indistinguishable in {c['indistinguishable']} and worse in "
                f"{c['worse']}.")
    per = "; ".join(f"**{c.family}** ({c.metrics}): better in {c.better} of {c.n}, indistinguishable in "
                    f"{c.indistinguishable}, worse in {c.worse}" for c in counts.itertuples())
    return (f"{method} against each other method, per metric and benchmark {lead}, counted per metric "
            f"family (not pooled): {per}.")


def held(pairs: pd.DataFrame, table: int | None = None) -> str:
    """Markdown, one line per (benchmark, metric): whom the method is better than, indistinguishable
    from and worse than (with the paired difference and its interval), and, where the paper has
    numbers in Table ``table``, how many of the paper's orderings of these pairs were confirmed."""
    _check(pairs)
    if pairs.empty:
        return "_No paired comparisons._"
    lines = []
    for (bench, metric), part in pairs.groupby(["benchmark", "metric"], sort=False):
        method = part["a"].iloc[0]
        direction = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
        groups = {v: part[part["verdict"] == v] for v in ("better", "indistinguishable", "worse")}
        said = []
        for v, phrase in (("better", "better than"), ("worse", "worse than")):
            if len(groups[v]):
                said.append(f"{phrase} " + ", ".join(
                    f"{r.b} ({_fmt(r.difference)}, CI [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}])"
                    for r in groups[v].itertuples()))
        if len(groups["indistinguishable"]):
            said.append("indistinguishable from " + ", ".join(groups["indistinguishable"]["b"]))
        where = f"`{bench}`, " if bench != "" else ""
        line = f"- {where}**{metric}** ({direction} is better): {method} is " + "; ".join(said) + "."
        paper = [(_paper_direction(table, bench, metric, method, r.b), r.verdict) for r in part.itertuples()]
        paper = [(p, v) for p, v in paper if p is not None and p != "equal"]
        if paper:
            confirmed = sum(p == v for p, v in paper)
            contradicted = sum(v != "indistinguishable" and p != v for p, v in paper)
            pairs_word = "orderings of these pairs" if len(paper) > 1 else "ordering of this pair"
            line += (f" Of the paper's {len(paper)} {pairs_word}: {confirmed} confirmed, "
                     f"{len(paper) - confirmed - contradicted} not resolved, {contradicted} contradicted.")
        lines.append(line)
    return "\n".join(lines)



def table(pairs: pd.DataFrame, fmt: str = ".3g") -> pd.DataFrame:
    """:func:`cam_core.evaluation.statistics.paired_table`'s output as a page shows it: per comparison the
    metric, ``a`` and ``b``, the difference ``a - b`` as ``"d [low, high]"`` (its 95% interval), the
    Holm-corrected p-value and the verdict; the index levels other than the row number (a chapter's
    ``layer``, say) are kept. The means, the uncorrected p-value and the test's name stay in the saved CSV."""
    _check(pairs)
    shown = pd.DataFrame({
        **({"benchmark": pairs["benchmark"]} if pairs["benchmark"].nunique() > 1 else {}),
        "metric": pairs["metric"], "a": pairs["a"], "b": pairs["b"],
        "a - b [95% CI]": with_ci(pairs["difference"], pairs["ci_low"], pairs["ci_high"], f"+{fmt}"),
        "p (Holm)": [f"{p:.2g}" if pd.notna(p) else "–" for p in pairs["p_holm"]],
        "verdict": pairs["verdict"],
    }, index=pairs.index)
    if isinstance(shown.index, pd.MultiIndex):  # keep the named levels (e.g. "layer"), drop the row numbers
        shown.index = shown.index.droplevel([i for i, n in enumerate(shown.index.names) if n is None])
    return shown
