"""One batch of the evaluation: every method and metric on one batch of images, and its cache file.

The one batch function that both executors call: the serial runner (:mod:`cam_core.evaluation.runner`)
and the Ray executor (:mod:`cam_core.evaluation.ray_executor`). Imports only layers below the
evaluation (metrics, methods, model) and :mod:`cam_core.evaluation.reference_maps`, never the runner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cam_core import metrics as M
from cam_core.evaluation import reference_maps
from cam_core.methods.base import BaseCAM
from cam_core.runtime import eval_mode


# ---- cache folder ---------------------------------------------------------------------------
def _batch_path(folder: Path, i: int) -> Path:
    return folder / f"batch_{i:05d}.json"


def _read_batch(folder: Path, i: int, index: list[int]) -> dict | None:
    """A finished batch's record, or None when it is missing, unreadable or for other images.

    Only ``batch_NNNNN.json`` files are read; writes go through a temporary name and ``os.replace``,
    so such a file is always complete; one that fails to parse anyway is recomputed, not trusted.
    """
    p = _batch_path(folder, i)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("index") != index or "rows" not in rec:
        return None
    return rec


# ---- one batch --------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_batch(
    bench: Any,
    batch: Any,
    methods: list[tuple[str, Callable[..., BaseCAM]]],
    metrics: list[str],
    method_kwargs: dict[str, dict[str, Any]],
    target: str,
    reference: tuple[str, Callable] | None,
    opts: dict[str, Any],
) -> dict:
    """All metrics of all methods on one batch: {"rows": {column: list}, "timings": {method: s}}."""
    from cam_core.model.token_split import token_split

    model = bench.model_for(batch)
    x = batch.x  # (B, C, H, W)
    n, _, h, w = x.shape
    if target == "predicted":
        with torch.no_grad(), eval_mode(model):
            t = model(x).argmax(dim=1)  # (B,) top-1, the paper's choice
    else:
        t = batch.labels.long().to(x.device)
    mean, std = getattr(bench, "mean", None), getattr(bench, "std", None)
    fbs = opts["forward_batch_size"]
    boxes = [batch.boxes_for(i, int(t[i])) for i in range(n)]
    head = None
    if "local_accuracy" in metrics:
        try:
            head = token_split(model, bench.target_layer, x)[1]  # a token layer: its head of maps
        except ValueError:
            head = None
    rows: dict[str, list] = {"image": [], "method": [], "metric": [], "value": [], "target": []}
    timings: dict[str, float] = {}
    index = [int(i) for i in batch.index.tolist()]
    targets = [int(c) for c in t.tolist()]

    def run(name: str, factory: Callable[..., BaseCAM]) -> Any:
        if isinstance(factory, type) and issubclass(factory, reference_maps.ReferenceMap):
            return _reference_result(factory(**method_kwargs.get(name, {})), x, t, boxes, index)
        cam = factory(model, bench.target_layer, **method_kwargs.get(name, {}))
        _sync(x.device)
        t0 = time.perf_counter()
        res = cam(x, target=t)
        _sync(x.device)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return res

    ref_alpha: Tensor | None = None
    if reference is not None and reference[0] not in [m for m, _ in methods]:
        ref_alpha = run(*reference).alpha
    results = {}
    for name, factory in methods:
        results[name] = res = run(name, factory)
        if reference is not None and name == reference[0]:
            ref_alpha = res.alpha
    for name, res in results.items():
        values: dict[str, Tensor] = {}
        sal = res.saliency  # (B, H, W)
        if {"IC", "AD", "ADD"} & set(metrics):
            sc = M.confidence_scores(model, x, sal, t, mean=mean, std=std, batch_size=fbs,
                                     baseline=opts["baseline"])
            values["IC"] = M.increase_in_confidence(sc.original, sc.explanation)
            values["AD"] = M.average_drop(sc.original, sc.explanation)
            values["ADD"] = M.average_drop_in_deletion(sc.original, sc.inverted)
        curves = tuple(c for c in ("insertion", "deletion") if c in metrics)
        if curves:
            values.update(
                M.insertion_deletion(
                    model,
                    x,
                    sal,
                    t,
                    steps=opts["steps"],
                    baseline=opts["baseline"],
                    mean=mean,
                    std=std,
                    batch_size=fbs,
                    curves=curves,
                )
            )
        drops = [m for m in metrics if "@" in m]
        if drops:
            qs = tuple(dict.fromkeys(M.parse_drop_metric(m)[1] for m in drops))
            values.update(M.top_q_drops(model, x, sal, t, qs, baseline=opts["baseline"], mean=mean, std=std,
                                        batch_size=fbs))
        if "energy" in metrics:
            values["energy"] = M.energy_pointing_game(sal, M.batch_masks(boxes, (h, w)).to(sal.device))
        if "pointing" in metrics:
            values["pointing"] = M.pointing_game(sal, boxes, tolerance=opts["pointing_tolerance"])
        nan = torch.full((n,), float("nan"), device=sal.device)
        if "local_accuracy" in metrics:
            values["local_accuracy"] = (
                M.local_accuracy_error(res.alpha, head, res.activations, t)
                if head is not None and res.alpha is not None
                else nan
            )
        if "cosine" in metrics:
            values["cosine"] = M.cosine_similarity(res.alpha, ref_alpha) if res.alpha is not None else nan
        if getattr(res, "valid", None) is not None:  # a sanity map undefined on some images (Box, no box)
            values = {k: torch.where(res.valid.to(v.device), v, nan.to(v.device)) for k, v in values.items()}
        for metric in metrics:
            rows["image"] += index
            rows["method"] += [name] * n
            rows["metric"] += [metric] * n
            rows["value"] += [float(v) for v in values[metric].detach().double().cpu().tolist()]
            rows["target"] += targets
    return {"rows": rows, "timings": timings}


class _ReferenceResult:
    """What the metrics read of a method's result, for a sanity map: no coefficients, no activations."""

    alpha = activations = None

    def __init__(self, saliency: Tensor, valid: Tensor | None):
        self.saliency, self.valid = saliency, valid


def _reference_result(ref: reference_maps.ReferenceMap, x: Tensor, t: Tensor, boxes: list[Tensor],
                      index: list[int]) -> _ReferenceResult:
    valid = torch.tensor([len(b) > 0 for b in boxes]) if ref.needs_boxes else None
    return _ReferenceResult(ref(x, t, boxes=boxes, index=index), valid)
