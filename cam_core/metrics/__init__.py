"""The paper's metrics, batched over images, on any device.

- faithfulness: IC / AD / ADD (Eqs. 11-13), insertion / deletion AUC (Table 4), each with a
  ``baseline=`` fill (zero / mean / blur / road);
- road: ROAD's noisy linear imputation of removed pixels (Rong et al., 2022);
- drop: contrast-free AD@q / ADD@q (keep or remove the top q % pixels; issue 20);
- localization: energy-based pointing game (Eq. 14, Table 5), hit/miss pointing game;
- similarity: cosine similarity of coefficients (Table 2), local-accuracy error (Eq. 8).

May import: the base modules, model, kernels (never methods, benchmarks, evaluation, vqa, book;
see cam_core/ARCHITECTURE.md).
"""
from cam_core.metrics.drop import TOP_Q, drop_metric_names, parse_drop_metric, top_q_drops, top_q_masks
from cam_core.metrics.faithfulness import (
    BASELINES,
    ROAD_KEEP_THRESHOLD,
    TIE_BREAK,
    ConfidenceScores,
    average_drop,
    average_drop_in_deletion,
    baseline_image,
    black,
    blend,
    check_baseline,
    confidence_scores,
    deletion_auc,
    fill_image,
    gaussian_blur,
    increase_in_confidence,
    insertion_auc,
    insertion_deletion,
    mask_image,
    pixel_ranks,
    step_counts,
    tie_order,
    tiled_target_softmax,
)
from cam_core.metrics.localization import (
    batch_masks,
    box_masks,
    box_spans,
    boxes_mask,
    default_tolerance,
    energy_pointing_game,
    pointing_game,
)
from cam_core.metrics.road import ROAD_NOISE, road_impute
from cam_core.metrics.similarity import cosine_similarity, head_delta, local_accuracy_error, relative_error

#: metric -> True when higher is better (the paper's convention for each column)
HIGHER_IS_BETTER: dict[str, bool] = {
    "IC": True,
    "AD": False,
    "ADD": True,
    "insertion": True,
    "deletion": False,
    "energy": True,
    "pointing": True,
    "local_accuracy": False,
    "cosine": True,
    **{name: name.startswith("ADD") for name in drop_metric_names()},
}
#: the metric families the headline counts separately (cam_core.claims): what each kind of metric asks
METRIC_FAMILIES: dict[str, str] = {
    "cosine": "approximation", "local_accuracy": "approximation",
    "IC": "drop", "AD": "drop", "ADD": "drop", **{name: "drop" for name in drop_metric_names()},
    "insertion": "insertion-deletion", "deletion": "insertion-deletion",
    "energy": "localization", "pointing": "localization",
}

#: aggregate = SCALE * mean over images (the paper reports IC/AD/ADD/energy in %)
SCALE: dict[str, float] = {
    "IC": 100.0,
    "AD": 100.0,
    "ADD": 100.0,
    "insertion": 1.0,
    "deletion": 1.0,
    "energy": 100.0,
    "pointing": 100.0,
    "local_accuracy": 1.0,
    "cosine": 1.0,
    **{name: 100.0 for name in drop_metric_names()},
}

__all__ = [
    "HIGHER_IS_BETTER", "METRIC_FAMILIES", "SCALE",
    "TOP_Q", "drop_metric_names", "parse_drop_metric", "top_q_drops", "top_q_masks",
    "ROAD_KEEP_THRESHOLD", "ROAD_NOISE", "road_impute", "check_baseline", "fill_image",
    "BASELINES", "ConfidenceScores", "average_drop", "average_drop_in_deletion", "baseline_image", "black",
    "blend", "confidence_scores", "deletion_auc", "gaussian_blur", "increase_in_confidence", "insertion_auc",
    "insertion_deletion", "mask_image", "pixel_ranks", "step_counts", "tie_order", "TIE_BREAK",
    "tiled_target_softmax",
    "batch_masks", "box_masks", "box_spans", "boxes_mask", "default_tolerance", "energy_pointing_game",
    "pointing_game",
    "cosine_similarity", "head_delta", "local_accuracy_error", "relative_error",
]
