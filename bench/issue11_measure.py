"""Issue 11 item 4: Tables 2-5 (mean and 95% bootstrap CI) on the v3 proxy, one benchmark per process.

    python bench/issue11_measure.py shapes-single 80 16 12 1000 /tmp/m   # (and shapes-multi, shapes-clutter)
    python bench/issue11_post.py /tmp/m results/issue11_proxy-v3_tables2-5

usage: measure.py BENCHMARK N_IMAGES N_AUC N_COSINE REF_ORDERINGS OUT_DIR
Table 3 (IC/AD/ADD) and Table 5 (energy, hit pointing game) on N_IMAGES, Table 4 (insertion/deletion,
41 steps) on the first N_AUC of the same seeded subset, all on the VGG-style model with the paper's six
methods and the sanity maps (Box, Uniform, Random, Center); Table 2 (cosine to SHAP-CAM with
REF_ORDERINGS orderings, local accuracy) on N_COSINE images for both models.
"""
import sys
import time
from pathlib import Path

import pandas as pd

import cam_core as cc

name, n_img, n_auc, n_cos, ref_p, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), Path(sys.argv[6])
out.mkdir(parents=True, exist_ok=True)
cc.seed_everything(0)
methods = [*cc.PAPER_METHODS, *cc.SANITY_MAPS]
rows, times = [], {}
vgg = cc.benchmarks.load(name, device="cpu", arch="vgg")
t0 = time.perf_counter()
df = cc.evaluate(vgg, methods=methods, metrics=["IC", "AD", "ADD", "energy", "pointing"], n_images=n_img,
                 seed=0, batch_size=32, progress=False, cache=out / "cache")
rows.append(cc.evaluation.summarize(df, seed=0).assign(table=lambda d: d["metric"].map(
    {"IC": 3, "AD": 3, "ADD": 3, "energy": 5, "pointing": 5}), arch="vgg"))
df.to_csv(out / f"{name}_vgg_t35.csv", index=False)
times["t35"] = time.perf_counter() - t0
t0 = time.perf_counter()
auc = cc.evaluate(vgg, methods=methods, metrics=["insertion", "deletion"], n_images=n_auc, seed=0,
                  batch_size=32, progress=False, steps=40, cache=out / "cache")
rows.append(cc.evaluation.summarize(auc, seed=0).assign(table=4, arch="vgg"))
auc.to_csv(out / f"{name}_vgg_t4.csv", index=False)
times["t4"] = time.perf_counter() - t0
for arch in ("vgg", "resnet"):
    bench = vgg if arch == "vgg" else cc.benchmarks.load(name, device="cpu", arch=arch)
    t0 = time.perf_counter()
    cos = cc.evaluate(bench, methods=cc.PAPER_METHODS, metrics=["cosine", "local_accuracy"], n_images=n_cos,
                      seed=0, batch_size=32, progress=False, reference="SHAP-CAM", cache=out / "cache",
                      method_kwargs={"SHAP-CAM": {"n_orderings": ref_p, "seed": 0}})
    rows.append(cc.evaluation.summarize(cos, seed=0).assign(table=2, arch=arch))
    cos.to_csv(out / f"{name}_{arch}_t2.csv", index=False)
    times[f"t2_{arch}"] = time.perf_counter() - t0
summary = pd.concat(rows, ignore_index=True).assign(benchmark=name)
summary.to_csv(out / f"{name}_summary.csv", index=False)
print(name, {k: round(v) for k, v in times.items()}, flush=True)
