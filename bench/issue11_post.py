"""Combine measure.py's outputs: summary (mean, CI) and paired LIFT-CAM vs each method (Holm per table)."""
import sys
from pathlib import Path

import pandas as pd

import cam_core as cc

src, out = Path(sys.argv[1]), Path(sys.argv[2])
others = [m for m in cc.PAPER_METHODS if m != "LIFT-CAM"]
summaries, pairs = [], []
for f in sorted(src.glob("*_summary.csv")):
    summaries.append(pd.read_csv(f))
tables = {"t35": {3: ["IC", "AD", "ADD"], 5: ["energy", "pointing"]}, "t4": {4: ["insertion", "deletion"]},
          "t2": {2: ["cosine"]}}
for f in sorted(src.glob("*_t*.csv")):
    bench, arch, part = f.stem.split("_")
    df = pd.read_csv(f)
    for table, metrics in tables[part].items():
        metrics = [m for m in metrics if m in df["metric"].unique()] if "metric" in df else metrics
        if not metrics:
            continue
        pt = cc.evaluation.paired_table(df, "LIFT-CAM", others=others, metrics=metrics, seed=0)
        pairs.append(pt.assign(benchmark=bench, arch=arch, table=table))
summary = pd.concat(summaries, ignore_index=True)
cols = ["benchmark", "arch", "table", "metric", "method", "mean", "ci_low", "ci_high", "n"]
summary = summary[cols].sort_values(["table", "benchmark", "arch", "metric"], kind="stable")
summary.to_csv(out.with_suffix(".summary.csv"), index=False, float_format="%.4g")
if pairs:
    pairs_df = pd.concat(pairs, ignore_index=True)
    pairs_df.to_csv(out.with_suffix(".paired.csv"), index=False, float_format="%.4g")
print(summary.to_string(index=False))
