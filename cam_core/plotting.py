"""Figures: images with their boxes, saliency overlays, and grids of methods (numpy only here).

The book's chapters and the ``demo`` command use these::

    fig = show_explanations(batch.x, {"Grad-CAM": s1, "LIFT-CAM": s2}, boxes=batch.boxes,
                            titles=[...])                        # rows: images, columns: methods
    save_figure(fig, "results/demo.png")

Tensors are accepted on any device and moved to the CPU as numpy arrays for matplotlib; images
are (N, 3, H, W) in [0, 1] (pass ``mean``/``std`` to undo a normalisation first).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd


def _mpl() -> Any:
    import matplotlib.pyplot as plt  # without a display, matplotlib falls back to Agg by itself

    return plt


def to_image(x: Tensor, mean: Tensor | Sequence[float] | None = None,
             std: Tensor | Sequence[float] | None = None) -> np.ndarray:
    """(3, H, W) or (1, H, W) tensor -> (H, W, 3) float numpy in [0, 1], undoing ``(x - mean) / std``."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None:
        x = (x * torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
             + torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1))
    if x.shape[0] == 1:
        x = x.expand(3, *x.shape[1:])
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def draw_boxes(ax: Any, boxes: Tensor | None, labels: Tensor | Sequence[int] | None = None,
               class_names: Sequence[str] | None = None, color: str = "white", highlight: int | None = None,
               highlight_color: str = "lime", linewidth: float = 1.2) -> None:
    """Draw ``boxes`` (M, 4) ``x0, y0, x1, y1`` (pixels, exclusive ends) on ``ax``; boxes whose label is
    ``highlight`` get ``highlight_color``; labels are written when ``class_names`` is given."""
    if boxes is None or len(boxes) == 0:
        return
    from matplotlib.patches import Rectangle

    b = boxes.detach().float().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes, dtype=float)
    lab = None if labels is None else [int(v) for v in labels]
    for j, (x0, y0, x1, y1) in enumerate(b):
        c = highlight_color if (lab is not None and highlight is not None and lab[j] == highlight) else color
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                               linewidth=linewidth))
        if lab is not None and class_names is not None:
            ax.text(x0 - 0.5, y0 - 1, class_names[lab[j]], color=c, fontsize=6, va="bottom")


def show_images(images: Tensor, boxes: Sequence[Tensor] | None = None,
                box_labels: Sequence[Tensor] | None = None, class_names: Sequence[str] | None = None,
                titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.6,
                mean: Any = None, std: Any = None) -> Any:
    """A grid of images (N, 3, H, W) with their boxes; returns the matplotlib Figure."""
    plt = _mpl()
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(to_image(images[i], mean, std), interpolation="nearest")
        draw_boxes(ax, None if boxes is None else boxes[i], None if box_labels is None else box_labels[i],
                   class_names)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def show_explanations(images: Tensor, saliencies_by_method: Mapping[str, Tensor],
                      boxes: Sequence[Tensor] | None = None, titles: Sequence[str] | None = None,
                      box_labels: Sequence[Tensor] | None = None,
                      targets: Tensor | Sequence[int] | None = None,
                      class_names: Sequence[str] | None = None, alpha: float = 0.5, cmap: str = "jet",
                      size: float = 1.7, mean: Any = None, std: Any = None) -> Any:
    """Rows: images; columns: the image, then each method's saliency (N, H, W) in [0, 1] overlaid.

    ``boxes[i]`` (M_i, 4) are drawn on every panel of row ``i``; with ``box_labels`` and ``targets``,
    the boxes of the explained class are highlighted. ``titles[i]`` labels row ``i``. Returns the Figure.
    """
    plt = _mpl()
    n = images.shape[0]
    names = list(saliencies_by_method)
    for name, sal in saliencies_by_method.items():
        if sal.shape[0] != n or sal.dim() != 3:
            raise ValueError(f"saliency of {name!r} must be (N, H, W) with N = {n}, got {tuple(sal.shape)}")
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(size * (1 + len(names)), size * n + 0.3),
                             squeeze=False)
    tgt = None if targets is None else [int(t) for t in targets]
    for i in range(n):
        img = to_image(images[i], mean, std)
        panels = [("image", None)] + [(m, saliencies_by_method[m][i]) for m in names]
        for j, (name, sal) in enumerate(panels):
            ax = axes[i, j]
            ax.axis("off")
            ax.imshow(img, interpolation="nearest")
            if sal is not None:
                ax.imshow(sal.detach().float().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1,
                          interpolation="bilinear")
            draw_boxes(ax, None if boxes is None else boxes[i], None if box_labels is None else box_labels[i],
                       highlight=None if tgt is None else tgt[i])
            if i == 0:
                ax.set_title(name, fontsize=8)
        if titles is not None:
            axes[i, 0].text(-0.08, 0.5, titles[i], transform=axes[i, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save ``fig`` (creating the folder), close it, and return the path."""
    plt = _mpl()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_convergence(curve: pd.DataFrame, ax: Any = None, label: str | None = None) -> Any:
    """Mean relative error against the number of orderings (log-log), with a 1/sqrt(P) guide."""
    if ax is None:
        _, ax = _mpl().subplots(figsize=(4.5, 3.4))
    stats = curve.groupby("orderings")["rel_error"].agg(["mean", "std"])
    p = stats.index.to_numpy(float)
    ax.errorbar(p, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label or "measured")
    guide = stats["mean"].iloc[0] * np.sqrt(p[0] / p)
    ax.plot(p, guide, "k--", lw=1, label=r"$\propto 1/\sqrt{P}$")
    ax.set(xscale="log", yscale="log", xlabel="orderings P", ylabel="relative error")
    ax.legend(frameon=False)
    return ax.figure


def plot_cascade(maps_by_method: Mapping[str, Mapping[str, Tensor]], image: Tensor | None = None,
                 mean: Tensor | Sequence[float] | None = None, std: Tensor | Sequence[float] | None = None,
                 index: int = 0) -> Any:
    """The cascading-randomization figure (Adebayo et al., 2018, Fig. 2): one row per method, the original
    map then the map after each cascade step (``{method: {"original": (N, H, W), layer: (N, H, W), ...}}``
    as :func:`cam_core.evaluation.randomization.randomization` returns with ``return_maps``); image ``index``."""
    plt = _mpl()
    methods = list(maps_by_method)
    steps = list(maps_by_method[methods[0]])
    extra = 1 if image is not None else 0
    fig, axes = plt.subplots(len(methods), len(steps) + extra, squeeze=False,
                             figsize=(1.25 * (len(steps) + extra), 1.3 * len(methods)))
    for r, m in enumerate(methods):
        if image is not None:
            axes[r, 0].imshow(to_image(image, mean, std))
            axes[r, 0].set_ylabel(m, fontsize=7)
        for c, step in enumerate(steps):
            ax = axes[r, c + extra]
            ax.imshow(maps_by_method[m][step][index].detach().cpu().numpy(), cmap="jet", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(step if step == "original" else f"+{step}", fontsize=7)
            if c + extra == 0:
                ax.set_ylabel(m, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_randomization_curves(df: pd.DataFrame, value: str = "spearman", ax: Any = None) -> Any:
    """Similarity to the original maps (``value``) along the cascade, one line per method (``df``: the
    concatenated :func:`cam_core.evaluation.randomization.randomization` frames with a ``method`` column)."""
    plt = _mpl()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for m, part in df.groupby("method", sort=False):
        ax.plot(part["step"], part[value], marker="o", label=m)
    first = df.drop_duplicates("step").sort_values("step")
    ax.set_xticks(first["step"], [f"+{n}" for n in first["layer"]], rotation=45, fontsize=7)
    head = first[first["in_head"]]
    if len(head):
        ax.axvspan(head["step"].min() - 0.5, head["step"].max() + 0.5, color="0.92", zorder=0, label="head")
    ax.set(xlabel="layers re-initialised (cascade, from the logits down)", ylabel=f"{value} with original",
           ylim=(-0.2, 1.05))
    ax.legend(frameon=False, fontsize=7)
    return ax
