r"""Does the map depend on the model? Model-randomization and class-sensitivity checks
(Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

An explanation of *this* model's decision must change when the model's weights are replaced by
random ones. :func:`randomization` re-initialises layers from the logits down, either one more at a
time (``"cascade"``: the figure people know) or one at a time (``"independent"``), and scores each
randomized model's maps against the original ones (Spearman rank correlation and SSIM,
:mod:`cam_core.metrics.maps`). :func:`class_sensitivity` compares the maps of two classes of one
image: a map that does not change with the class explains the image, not the decision.
:func:`randomization_check` turns both into the pass/fail table of the sanity chapter, with intervals
over the images (and over independently trained models when given several) and a three-way verdict.

The caller's model is never touched: every check works on a deep copy.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from cam_core.metrics.maps import rank_correlation, ssim
from cam_core.methods.base import BaseCAM
from cam_core.runtime import eval_mode

MODES = ("cascade", "independent")
#: the Spearman correlation with the original maps below which a method "passes" once the head is random
PASS_THRESHOLD = 0.5

MethodLike = str | type[BaseCAM] | Callable[[nn.Module, str], Any]


def _factory(method: MethodLike, kwargs: dict[str, Any] | None) -> Callable[[nn.Module, str], Any]:
    kwargs = kwargs or {}
    if isinstance(method, str):
        from cam_core.methods.registry import method_class

        cls = method_class(method)[1]
        return lambda model, layer: cls(model, layer, **kwargs)
    if callable(method):
        return lambda model, layer: method(model, layer, **kwargs)
    raise ValueError(f"method must be a table name (cc.METHODS), a BaseCAM subclass or a callable "
                     f"(model, layer) -> method; got {method!r}")


def _saliency(make: Callable[[nn.Module, str], Any], model: nn.Module, layer: str, x: Tensor,
              target: Tensor) -> Tensor:
    out = make(model, layer)(x, target=target)
    return (out.saliency if hasattr(out, "saliency") else out).detach()  # (N, H, W)


def randomizable_layers(model: nn.Module, kinds: tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """The modules that hold parameters of their own (of the types ``kinds`` only, e.g. ``(nn.Conv2d,
    nn.Linear)`` to leave normalisation layers out), from the logits down (reverse registration order,
    the forward order of a sequential net)."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))
            and (kinds is None or isinstance(m, kinds))][::-1]


def head_layers(model: nn.Module, layer: str) -> list[str]:
    """The layers of :func:`randomizable_layers` that lie above ``layer`` (in the head that maps the
    layer's activations to the logits, :func:`cam_core.split_model`), from the logits down."""
    from cam_core.model.split import split_model

    head = {id(p) for p in split_model(model, layer).head.parameters()}
    named = dict(model.named_modules())
    return [n for n in randomizable_layers(model) if all(id(p) in head for p in named[n].parameters(recurse=False))]


def reinitialize(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s own parameters (its ``reset_parameters``, the PyTorch default init; running
    statistics too) from ``seed``, in place, without touching the global random state."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if hasattr(fresh, "reset_parameters"):
            fresh.reset_parameters()
        else:  # no default init: gaussian noise of each tensor's own scale
            for p in fresh.parameters(recurse=False):
                p.data.normal_(0.0, float(p.detach().std()) if p.numel() > 1 else 1.0)
    with torch.no_grad():
        for (name, p) in module.named_parameters(recurse=False):
            p.copy_(getattr(fresh, name))
        for (name, b) in module.named_buffers(recurse=False):
            if b is not None and getattr(fresh, name, None) is not None:
                b.copy_(getattr(fresh, name))


def randomization(model: nn.Module, layer: str, method: MethodLike, x: Tensor, target: Tensor | int | None = None,
                  mode: str = "cascade", seed: int = 0, *, layers: Sequence[str] | None = None,
                  per_image: bool = False, method_kwargs: dict[str, Any] | None = None,
                  return_maps: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Tensor]]:
    """The model-randomization test of Adebayo et al. (2018) for one method.

    Args:
        model, layer: the classifier and the layer whose maps are explained (never modified: the
            randomized models are copies).
        method: a table name (``"Grad-CAM"``), a BaseCAM subclass, or any callable
            ``(model, layer) -> m`` with ``m(x, target=t)`` returning a result with ``.saliency`` or an
            (N, H, W) map.
        x: (N, C, H, W) images; ``target``: classes explained (default: the original model's top-1,
            the same classes for every randomized model).
        mode: ``"cascade"``: step k re-initialises the first k layers of ``layers`` (the top k, from
            the logits down); ``"independent"``: step k re-initialises layer k alone.
        seed: layer k is re-drawn from ``seed + k`` (the same weights in both modes).
        layers: which layers, in order (default :func:`randomizable_layers`: all, from the logits down).
        per_image: one row per image and step; else the mean over images.
        method_kwargs: passed to the method's constructor.
        return_maps: also return ``{"original": (N, H, W), layer: (N, H, W), ...}`` (the maps of each
            step, for the figure).

    Returns:
        ``step, layer, in_head, spearman, ssim`` (plus ``image`` with ``per_image``): ``layer`` the layer
        re-initialised at that step, ``in_head`` whether it lies above ``layer`` (the maps' head),
        similarity of the randomized model's maps to the original ones (1: unchanged).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    make = _factory(method, method_kwargs)
    work = copy.deepcopy(model)
    order = list(randomizable_layers(work) if layers is None else layers)
    named = dict(work.named_modules())
    unknown = [n for n in order if n not in named]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; layers with parameters: {randomizable_layers(work)}")
    in_head = set(head_layers(work, layer))
    if target is None:
        with torch.no_grad(), eval_mode(work):
            target = work(x).argmax(dim=1)
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0]) if not isinstance(target, Tensor) \
        or target.dim() == 0 else target
    original = _saliency(make, work, layer, x, target)
    pristine = copy.deepcopy(work) if mode == "independent" else None
    rows = []
    maps = {"original": original.cpu()}
    for k, name in enumerate(order):
        if pristine is not None:
            work = copy.deepcopy(pristine)
            named = dict(work.named_modules())
        reinitialize(named[name], seed + k)
        sal = _saliency(make, work, layer, x, target)
        if return_maps:
            maps[name] = sal.cpu()
        rho, s = rank_correlation(original, sal), ssim(original, sal)
        for i in range(x.shape[0]):
            rows.append((k, name, name in in_head, i, float(rho[i]), float(s[i])))
    df = pd.DataFrame(rows, columns=["step", "layer", "in_head", "image", "spearman", "ssim"])
    if not per_image:
        df = df.groupby(["step", "layer", "in_head"], sort=False, as_index=False)[["spearman", "ssim"]].mean()
    return (df, maps) if return_maps else df


def class_sensitivity(model: nn.Module, layer: str, method: MethodLike, x: Tensor,
                      classes: tuple[Tensor, Tensor] | None = None, *, per_image: bool = False,
                      method_kwargs: dict[str, Any] | None = None) -> pd.DataFrame:
    """Maps of two classes of the same image compared: ``image, class_a, class_b, spearman, ssim``
    (or their means, without ``per_image``). ``classes`` default: the model's top-1 and its least
    likely class. A class-discriminative method gives dissimilar maps (low values)."""
    make = _factory(method, method_kwargs)
    work = copy.deepcopy(model)
    if classes is None:
        with torch.no_grad(), eval_mode(work):
            logits = work(x)
        classes = (logits.argmax(dim=1), logits.argmin(dim=1))
    a, b = (torch.as_tensor(c, device=x.device).long() for c in classes)
    sa, sb = _saliency(make, work, layer, x, a), _saliency(make, work, layer, x, b)
    df = pd.DataFrame({"image": range(x.shape[0]), "class_a": a.tolist(), "class_b": b.tolist(),
                       "spearman": rank_correlation(sa, sb).numpy(), "ssim": ssim(sa, sb).numpy()})
    return df if per_image else df[["spearman", "ssim"]].mean().to_frame().T


def _first_clause(message: str) -> str:
    """An error's first clause, for a table's note: up to the first ";" or sentence end (not "e.g. ")."""
    return re.split(r";|(?<=[a-z0-9)])\.\s+(?=[A-Z])", message, maxsplit=1)[0].strip()


#: the four similarities of the pass/fail table, in its column order
CHECK_METRICS = ("spearman_head", "ssim_head", "spearman_class", "ssim_class")


def _method_name(method: MethodLike) -> str:
    if isinstance(method, str):
        return method
    return getattr(method, "name", getattr(method, "__name__", str(method)))


def _check_rows(model: nn.Module, layer: str, head: Sequence[str], method: MethodLike, x: Tensor,
                target: Tensor | None, seed: int, kw: dict[str, Any] | None) -> pd.DataFrame:
    """One model's per-image similarities for one method (``head``: its :func:`head_layers`): ``image,
    metric, value`` (the four of :data:`CHECK_METRICS`)."""
    rnd = randomization(model, layer, method, x, target, "cascade", seed, layers=head, per_image=True,
                        method_kwargs=kw)
    last = rnd[rnd["step"] == rnd["step"].max()]  # the whole head re-initialised
    cls = class_sensitivity(model, layer, method, x, per_image=True, method_kwargs=kw)
    parts = [pd.DataFrame({"image": frame["image"].to_numpy(), "metric": f"{value}_{what}",
                           "value": frame[value].to_numpy(float)})
             for what, frame in (("head", last), ("class", cls)) for value in ("spearman", "ssim")]
    return pd.concat(parts, ignore_index=True)


def randomization_check(model: nn.Module | Sequence[nn.Module], layer: str, methods: Sequence[MethodLike],
                        x: Tensor, target: Tensor | None = None, seed: int = 0, *,
                        threshold: float = PASS_THRESHOLD,
                        method_kwargs: dict[str, dict[str, Any]] | None = None, ci: float | None = 0.95,
                        per_image: bool = False) -> pd.DataFrame:
    """The pass/fail table: per method, the similarity of its maps after re-initialising the whole head
    (every layer above ``layer``, a cascade from the logits down) and between two classes, with intervals.

    Args:
        model: the classifier, or several independently trained ones (model seeds; same architecture,
            same ``layer``), each explained on the same images ``x`` (its own top-1 class unless
            ``target``).
        ci: the intervals' coverage: a bootstrap over the images, or with several models a hierarchical
            bootstrap (models, then images; :func:`cam_core.evaluation.statistics.summarize`). None: means
            only.
        per_image: return the tidy per-image frame (``model_seed, method, image, metric, value``) instead.

    Returns:
        ``method``, then for each of ``spearman_head, ssim_head, spearman_class, ssim_class`` its mean
        (the average of the models' means) and ``<name>_low`` / ``<name>_high``; ``n_models``,
        ``models_failing`` (models whose own mean ``spearman_head`` is at least ``threshold``),
        ``randomization``, ``decided`` and ``note``. ``randomization`` is ``"pass"`` when the mean
        ``spearman_head`` is below ``threshold`` (the maps depend on the weights that make the decision) and
        ``"fail"`` otherwise; ``decided`` says whether its whole interval lies on that side of ``threshold``
        (False: more images or models are needed to call it; NA without ``ci``). ``"n/a"`` (with the
        reason in ``note``) for a method the model does not admit (CAM needs a global-average-pool +
        Linear head).
    """
    from cam_core.evaluation.statistics import summarize

    models = [model] if isinstance(model, nn.Module) else list(model)
    if not models:
        raise ValueError("no model given: pass a classifier or a list of independently trained ones")
    heads = [head_layers(mdl, layer) for mdl in models]  # once per model, not per method
    if not heads[0]:
        raise ValueError(f"no layer with parameters above {layer!r}: nothing to randomize in the head")
    tidy, notes = [], {}
    for m in methods:
        name = _method_name(m)
        kw = (method_kwargs or {}).get(name)
        try:
            tidy += [_check_rows(mdl, layer, head, m, x, target, seed, kw).assign(model_seed=k, method=name)
                     for k, (mdl, head) in enumerate(zip(models, heads, strict=True))]
        except ValueError as err:  # a method this model's head does not admit (e.g. CAM needs GAP + Linear)
            notes[name] = _first_clause(str(err))
    cols = ["model_seed", "method", "image", "metric", "value"]
    tidy = pd.concat(tidy, ignore_index=True)[cols] if tidy else pd.DataFrame(columns=cols)
    if per_image:
        return tidy
    summary = summarize(tidy if len(models) > 1 else tidy.drop(columns="model_seed"), ci=ci, seed=seed)
    rows = []
    for m in methods:
        name = _method_name(m)
        row: dict[str, Any] = {"method": name}
        if name in notes:
            rows.append({**row, "n_models": len(models), "randomization": "n/a", "note": notes[name]})
            continue
        cell = summary[summary["method"] == name].set_index("metric")
        for metric in CHECK_METRICS:
            row.update({metric: cell.at[metric, "mean"], f"{metric}_low": cell.at[metric, "ci_low"],
                        f"{metric}_high": cell.at[metric, "ci_high"]})
        own = tidy[(tidy["method"] == name) & (tidy["metric"] == "spearman_head")]
        own = own.groupby("model_seed")["value"]
        verdict = "pass" if row["spearman_head"] < threshold else "fail"
        decided = pd.NA if ci is None else bool(row["spearman_head_high"] < threshold if verdict == "pass"
                                                else row["spearman_head_low"] >= threshold)
        rows.append({**row, "n_models": len(models), "models_failing": int((own.mean() >= threshold).sum()),
                     "randomization": verdict, "decided": decided, "note": ""})
    columns = ["method", *(c for m in CHECK_METRICS for c in (m, f"{m}_low", f"{m}_high")), "n_models",
               "models_failing", "randomization", "decided", "note"]
    out = pd.DataFrame(rows).reindex(columns=columns)
    out["models_failing"] = out["models_failing"].astype("Int64")
    out["decided"] = out["decided"].astype("boolean")
    out.attrs.update(threshold=threshold, ci=ci)
    return out


def check_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`randomization_check`'s table as the book prints it: one ``"mean [low, high]"`` cell per
    similarity, the models whose maps fail (``"2 of 3"``) and the verdict (``"pass?"`` / ``"fail?"`` where
    the interval crosses the threshold); the ``note`` column left out."""
    from cam_core.evaluation.statistics import with_ci

    labels = {"spearman_head": "Spearman, random head", "ssim_head": "SSIM, random head",
              "spearman_class": "Spearman, two classes", "ssim_class": "SSIM, two classes"}
    out = pd.DataFrame({"method": table["method"]})
    for metric, label in labels.items():
        out[label] = with_ci(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])
    out["models failing"] = [f"{int(f)} of {int(n)}" if pd.notna(f) else "–"
                             for f, n in zip(table["models_failing"], table["n_models"], strict=True)]
    out["verdict"] = [f"{v}?" if d is False else v
                      for v, d in zip(table["randomization"], table["decided"].astype(object), strict=True)]
    return out
