"""Held-out scores of the embedded benchmark's classifiers: accuracy / mAP and calibration.

- top-1 accuracy (single-label) or mAP over classes (multi-label, VOC/COCO's average precision);
- the share of images whose top-1 **softmax** score is above 0.99: the faithfulness metrics
  (Eq. 11-13) score softmax probabilities, also for multi-label models as the paper does, and a
  saturated softmax leaves them nothing to measure (generator v2: 92% above 0.99);
- the expected calibration error (ECE, 15 equal-width bins): of the top-1 softmax confidence
  against top-1 correctness (single-label), or of every per-class sigmoid probability against its
  label (multi-label, the probabilities such a model is trained to give).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cam_core.benchmarks.generator import ShapesData

SATURATED = 0.99  # a top-1 softmax score above this counts as saturated


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision (the area under the precision-recall step curve, as VOC/COCO
    and sklearn's ``average_precision_score``): scores, targets (N, C) -> (C,). A class with no
    positive gets NaN. Ties are broken by order (stable sort), like sklearn without tied scores."""
    order = scores.argsort(dim=0, descending=True, stable=True)  # (N, C)
    hits = targets.gather(0, order).float()  # (N, C) 1 where the k-th ranked item is positive
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, hits.shape[0] + 1, device=scores.device, dtype=torch.float32)[:, None]
    positives = hits.sum(0)
    return (precision * hits).sum(0) / positives.where(positives > 0, torch.nan)


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """mAP over the classes that have at least one positive."""
    return float(average_precision(scores, targets).nanmean())


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` over ``bins`` equal-width confidence bins
    (Guo et al., 2017): confidence (n,) in [0, 1], correct (n,) 0/1."""
    confidence, correct = confidence.flatten().float(), correct.flatten().float()
    which = (confidence * bins).long().clamp(max=bins - 1)  # (n,) bin of each score
    conf = torch.zeros(bins).index_add_(0, which, confidence)
    acc = torch.zeros(bins).index_add_(0, which, correct)
    return float((conf - acc).abs().sum() / max(confidence.numel(), 1))


@torch.no_grad()
def logits_of(model: nn.Module, data: ShapesData, batch_size: int = 512,
              device: torch.device | str = "cpu") -> Tensor:
    """The model's logits (N, C) on ``data`` (normalised as the benchmark's inputs), on the CPU; the
    model's ``training`` flag is restored."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(data.inputs(slice(i, i + batch_size)).to(device)).float().cpu()
                          for i in range(0, len(data), batch_size)])
    finally:
        model.train(was)


def report(logits: Tensor, labels: Tensor, multilabel: bool) -> dict[str, Any]:
    """``metric``, ``score`` (top-1 or mAP), ``share_above_0.99`` (top-1 softmax), ``ece`` and
    ``mean_top1_softmax`` from logits (N, C) and labels ((N,) or (N, C) multi-hot)."""
    probs = logits.softmax(dim=1)
    top = probs.max(dim=1).values  # (N,)
    if multilabel:
        score = mean_average_precision(logits, labels)
        ece = expected_calibration_error(torch.sigmoid(logits), labels)
    else:
        correct = logits.argmax(dim=1) == labels
        score = float(correct.float().mean())
        ece = expected_calibration_error(top, correct)
    return {"metric": "mAP" if multilabel else "top-1", "score": score,
            "share_above_0.99": float((top > SATURATED).float().mean()), "ece": ece,
            "mean_top1_softmax": float(top.mean()), "images": int(logits.shape[0])}


def score_model(model: nn.Module, data: ShapesData, multilabel: bool, batch_size: int = 512,
                device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (single-label) or mAP (multi-label) of ``model`` on ``data``."""
    return report(logits_of(model, data, batch_size, device), data.labels, multilabel)["score"]
