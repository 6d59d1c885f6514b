"""Issue 20's closing tables (results/issue20_full_book.md) from a full `make book` run's results/ folder
(the argument): `.venv/bin/python results/issue20_full_book.py results/ > results/issue20_full_book.md`."""
import sys
from pathlib import Path

import pandas as pd

import cam_core as cc
from cam_core.book import claims

R = Path(sys.argv[1])
out = []
P = lambda *a: out.append(" ".join(str(x) for x in a))


def cells(summary, metrics, fmt):
    s = summary[summary["metric"].isin(metrics)].copy()
    s["cell"] = cc.evaluation.statistics.with_ci(s["mean"], s["ci_low"], s["ci_high"], fmt)
    t = s.pivot_table(index=["benchmark", "method"], columns="metric", values="cell", aggfunc="first", sort=False)
    sh = s.pivot_table(index=["benchmark", "method"], columns="metric", values="seed_share", aggfunc="first", sort=False)
    t = t[[m for m in metrics if m in t.columns]]
    t["seed share (max)"] = sh.max(axis=1).map(lambda v: f"{v:.2f}")
    return t


s4 = pd.read_csv(R / "04_faithfulness_summary.csv")
P("## Table 3 (IC, AD, ADD in %; mean [95% hierarchical bootstrap over model seeds, then images])\n")
P(cells(s4[s4["table"] == 3], ["IC", "AD", "ADD"], ".1f").to_markdown())
P("\n## Table 4 (insertion / deletion AUC)\n")
P(cells(s4[s4["table"] == 4], ["insertion", "deletion"], ".3f").to_markdown())
s5 = pd.read_csv(R / "05_localization_summary.csv")
P("\n## Table 5 (energy-based pointing game %, hit pointing %)\n")
P(cells(s5, ["energy", "pointing"], ".1f").to_markdown())
P("\nn per cell:", sorted(set(s4["n"])), "(seeds:", sorted(set(s4["n_seeds"])), ")")

for name in ("04_faithfulness_pairs", "05_localization_pairs"):
    pairs = pd.read_csv(R / f"{name}.csv", index_col=0)
    P(f"\n## {name}: verdicts of LIFT-CAM vs the other five, per family (Holm within the table)\n")
    P(claims.family_counts(pairs).to_markdown(index=False))
    v = pairs.pivot_table(index=["benchmark", "metric"], columns="b", values="verdict", aggfunc="first", sort=False)
    P("\n" + v.to_markdown())

P("\n## Sanity warnings (chapter 4 summary)\n")
for t in (3, 4):
    P(cc.sanity.warning(s4[s4["table"] == t]) or "(none)")
    P("")
for f in ("07_sanity_checks_fills", "07_sanity_checks_contrast_dominated", "05_localization_contrast"):
    P(f"\n## {f}\n")
    P(pd.read_csv(R / f"{f}.csv").to_markdown(index=False, floatfmt=".2f"))
P("\n## 07_sanity_checks_randomization (mean [95% interval over the models, then the images])\n")
rnd = pd.read_csv(R / "07_sanity_checks_randomization.csv", keep_default_na=False, na_values=[""])  # keep "n/a"
P(cc.sanity.check_display(rnd).to_markdown(index=False))
c = pd.read_csv(R / "07_sanity_checks_contrast.csv")
P("\n## 07 contrast (maps raised to p)\n")
P(c.to_markdown(index=False, floatfmt=".1f"))
abl = sorted(R.glob("04_faithfulness_ablation_*.csv"))
for a in abl:
    d = pd.read_csv(a, index_col=0)
    P(f"\n## {a.stem}: means, label vs evidence\n")
    P(d.pivot_table(index=["method"], columns=["metric", "recipe"], values="mean", sort=False).round(2).to_markdown())
P("\n## 07 summary statements\n")
s7 = pd.read_csv(R / "07_sanity_checks_summary.csv")
r7 = rnd.fillna({"note": ""})
d7 = pd.read_csv(R / "07_sanity_checks_contrast_dominated.csv")
P(cc.sanity.statements(s7, r7, d7))
print("\n".join(out))
