"""The paper's Figures 1-2 and Table 2 on a real ImageNet network: the ``photos`` benchmark
(pretrained EfficientNet-Lite, real photographs; :mod:`cam_core.benchmarks.photos`).

One call per figure or table of the book:

    maps = cc.photo_study.explain_photos(bench, indices=[0, 4])    # every method, one layer
    fig = cc.photo_study.figure(maps)                                # Figure 1 / 2, redrawn
    df = cc.photo_study.lift_vs_shap(bench, {"last map": bench.target_layer,
                                             "inner block": bench.inner_layer}, n_orderings=200)
    cc.evaluation.summarize(df)                                      # Table 2 with intervals over photos

Table 2's reference is SHAP-CAM (Eq. 6) over ``n_orderings`` random orderings, computed as the mean
of two independent halves (seeds ``seed`` and ``seed + 1``): the cosine between the halves is the
reference's own convergence error, reported beside the methods (row ``SHAP-CAM (half vs half)``).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from cam_core.kernels import shapley
from cam_core.methods.registry import METHODS
from cam_core.metrics.similarity import cosine_similarity, local_accuracy_error
from cam_core.runtime import eval_mode
from cam_core.model.split import split_model

__all__ = ["PhotoMaps", "explain_photos", "figure", "lift_vs_shap", "timing_table", "REFERENCE_ROW"]

#: the row of :func:`lift_vs_shap` that holds the reference's convergence error
REFERENCE_ROW = "SHAP-CAM (half vs half)"


@dataclass
class PhotoMaps:
    """Every method's map on some photos: what :func:`figure` draws."""

    x: Tensor  # (N, 3, H, W) model input
    names: list[str]  # photo names
    target: Tensor  # (N,) the predicted class, explained
    prob: Tensor  # (N,) its softmax probability
    saliency: dict[str, Tensor]  # method -> (N, H, W) in [0, 1]
    seconds: dict[str, float]  # method -> seconds per photo
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it does not apply here
    boxes: list[Tensor] = field(default_factory=list)  # the photos' boxes of the explained class
    class_names: list[str] = field(default_factory=list)
    mean: Tensor | None = None
    std: Tensor | None = None
    layer: str = ""


def _method_kwargs(name: str, x: Tensor, n_orderings: int, seed: int) -> dict[str, Any]:
    if name == "SHAP-CAM":
        return {"n_orderings": n_orderings, "seed": seed}
    if name == "DeepSHAP-CAM":
        return {"background": torch.zeros_like(x[:1])}  # the black photo (x = 0 after TF-Lite scaling)
    return {}


def explain_photos(bench: Any, indices: Sequence[int] | None = None, layer: str | None = None,
                   methods: Sequence[str] | None = None, n_orderings: int = 200, seed: int = 0) -> PhotoMaps:
    """Every method of ``methods`` (default: all of ``cc.METHODS``) on the photos ``indices`` (default
    all) at ``layer`` (default the benchmark's last map), explaining the predicted class. A method
    that does not apply to this head (CAM needs a pool + Linear module pair) is recorded in
    ``skipped`` with its reason, not drawn. SHAP-CAM uses ``n_orderings`` orderings."""
    idx = list(range(len(bench))) if indices is None else [int(i) for i in indices]
    batch = next(iter(bench.images(n=None, indices=idx, batch_size=len(idx))))
    layer = layer or bench.target_layer
    names = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    split = split_model(bench.model, layer)
    with torch.no_grad(), eval_mode(bench.model):
        probs = bench.model(batch.x).softmax(1)
    target = probs.argmax(1)
    saliency, seconds, skipped = {}, {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            cam = METHODS[name](bench.model, layer, split=split,
                                **_method_kwargs(name, batch.x, n_orderings, seed))
            res = cam(batch.x, target=target)
        except ValueError as err:
            skipped[name] = str(err).split(";")[0]
            continue
        seconds[name] = (time.perf_counter() - start) / len(idx)
        saliency[name] = res.saliency.detach().cpu()
    boxes = [batch.boxes_for(i, int(t)).cpu() for i, t in enumerate(target.tolist())]
    return PhotoMaps(x=batch.x.cpu(), names=list(batch.extra.get("name", idx)), target=target.cpu(),
                     prob=probs.gather(1, target[:, None])[:, 0].cpu(), saliency=saliency, seconds=seconds,
                     skipped=skipped, boxes=boxes, class_names=list(bench.class_names), mean=bench.mean,
                     std=bench.std, layer=layer)


def figure(maps: PhotoMaps, size: float = 1.5) -> Any:
    """Figure 1 / 2 of the paper, redrawn: one row per photo (its predicted class and probability),
    the photo and every method's map overlaid, the photo's hand-drawn box."""
    from cam_core.plotting import show_explanations

    titles = [f"{n}: {maps.class_names[int(t)].split(',')[0]} {100 * float(p):.0f}%"
              for n, t, p in zip(maps.names, maps.target, maps.prob, strict=True)]
    return show_explanations(maps.x, maps.saliency, boxes=maps.boxes, titles=titles, mean=maps.mean,
                             std=maps.std, size=size)


def _reference(head: torch.nn.Module, a: Tensor, t: Tensor, n_orderings: int, seed: int,
               batch_size: int) -> tuple[Tensor, Tensor]:
    """SHAP-CAM over ``n_orderings`` orderings as the mean of two halves, and the halves' cosine."""
    half = max(1, n_orderings // 2)
    first = shapley.permutation(head, a, t, half, seed=seed, batch_size=batch_size)
    second = shapley.permutation(head, a, t, half, seed=seed + 1, batch_size=batch_size)
    return (first + second) / 2, cosine_similarity(first, second)


def lift_vs_shap(bench: Any, layers: Mapping[str, str], methods: Sequence[str] | None = None,
                 n_orderings: int | Mapping[str, int] = 200, indices: Sequence[int] | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """Table 2 on the real network: per photo and layer, each method's cosine similarity to the
    SHAP-CAM reference and its local-accuracy error ``|sum alpha - (F(A) - F(0))|`` (Eq. 8).

    Args:
        layers: ``{label: layer}``, e.g. ``{"last map": "_swish_1", "inner block": "_blocks.15"}``.
        methods: default the paper's six (``cc.PAPER_METHODS``).
        n_orderings: the reference's orderings (one number, or one per label).

    Returns:
        tidy ``run`` (the layer's label), ``image``, ``method``, ``metric`` (``cosine`` /
        ``local_accuracy``), ``value``, for :func:`cam_core.evaluation.summarize`; rows of
        :data:`REFERENCE_ROW` give the reference's half-vs-half cosine and ``SHAP-CAM`` its
        local-accuracy error. ``df.attrs["seconds"]``: ``{(label, method): seconds per photo}``, the
        reference included (``"SHAP-CAM"``).
    """
    from cam_core.methods.registry import PAPER_METHODS

    names = list(PAPER_METHODS) if methods is None else list(methods)
    idx = list(range(len(bench))) if indices is None else [int(i) for i in indices]
    rows: list[dict[str, Any]] = []
    seconds: dict[tuple[str, str], float] = {}
    for label, layer in layers.items():
        p = n_orderings[label] if isinstance(n_orderings, Mapping) else int(n_orderings)
        body, head = split_model(bench.model, layer)
        for i in idx:
            x = bench.sample(i).x[None].to(bench.device)  # one photo at a time: the reference's memory
            with torch.no_grad(), eval_mode(bench.model):
                a = body(x)
                t = head(a).argmax(1)
            start = time.perf_counter()
            with eval_mode(head):
                ref, halves = _reference(head, a, t, p, seed, batch_size=max(a.shape[1] - 1, 1))
            seconds[(label, "SHAP-CAM")] = seconds.get((label, "SHAP-CAM"), 0.0) + time.perf_counter() - start
            rows.append({"run": label, "image": i, "method": REFERENCE_ROW, "metric": "cosine",
                         "value": float(halves[0])})
            rows.append({"run": label, "image": i, "method": "SHAP-CAM", "metric": "local_accuracy",
                         "value": float(local_accuracy_error(ref, head, a, t)[0])})
            for name in names:
                start = time.perf_counter()
                alpha = METHODS[name](bench.model, layer, split=(body, head))(x, target=t).alpha
                seconds[(label, name)] = seconds.get((label, name), 0.0) + time.perf_counter() - start
                rows.append({"run": label, "image": i, "method": name, "metric": "cosine",
                             "value": float(cosine_similarity(alpha, ref)[0])})
                rows.append({"run": label, "image": i, "method": name, "metric": "local_accuracy",
                             "value": float(local_accuracy_error(alpha, head, a, t)[0])})
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = {k: v / len(idx) for k, v in seconds.items()}
    return df


def timing_table(df: pd.DataFrame) -> pd.DataFrame:
    """Seconds per photo of each method (rows) at each layer (columns) from :func:`lift_vs_shap`."""
    s = pd.Series(df.attrs["seconds"])
    out = s.unstack(0)
    out.index.name, out.columns.name = "method", None
    return out
