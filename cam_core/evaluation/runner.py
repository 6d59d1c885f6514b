"""The evaluation runner: the paper's Tables 2-5 from any benchmark, batched and resumable.

    table = cc.evaluate(bench, methods=cc.PAPER_METHODS, n_images=1000, seed=0)
    table.attrs["summary"]            # {method: {metric: aggregate}}, see summarize()
    cc.evaluation.summarize(table)    # method, metric, mean, ci_low, ci_high (bootstrap), n, n_nan
    cc.evaluation.paired(table, "AD", "LIFT-CAM", "Grad-CAM")   # paired difference, CI, p-value

Per batch of images: the benchmark's model for that batch (``bench.model_for``), the target of
each image, then each method once (timed), whose result every metric reuses. Each finished
batch is written atomically to a cache folder keyed by a hash of every argument, so an
interrupted run resumes where it stopped and a finished run re-run does no work.

Command line: ``python -m cam_core evaluate --benchmark shapes-single --arch vgg ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cam_core import metrics as M
from cam_core.evaluation import reference_maps
from cam_core.evaluation.batches import _batch_path, _read_batch, _run_batch
from cam_core.evaluation.statistics import (  # noqa: F401
    ci_table,
    clopper_pearson,
    hierarchical_bootstrap,
    holm,
    paired,
    paired_table,
    seed_variance,
    summarize,
)
from cam_core.methods.base import BaseCAM
from cam_core.names import lookup

#: every metric the runner knows, in table order
METRICS: tuple[str, ...] = (
    "IC",
    "AD",
    "ADD",
    "insertion",
    "deletion",
    "energy",
    "pointing",
    "local_accuracy",
    "cosine",
    *M.drop_metric_names(),
)
#: the default metric set (Tables 3, 4, 5, the hit/miss pointing game and Eq. 8's error): all but "cosine",
#: which needs a reference method, and the contrast-free drops AD@q / ADD@q (issue 20), asked for by name
DEFAULT_METRICS: list[str] = [m for m in METRICS if m != "cosine" and "@" not in m]
#: aggregate = SCALE * mean over images (defined with the metrics)
SCALE = M.SCALE
#: which way is better, for each metric (defined with the metrics)
HIGHER_IS_BETTER = M.HIGHER_IS_BETTER
#: keyword arguments each method gets unless the caller overrides them (merged per method)
DEFAULT_METHOD_KWARGS: dict[str, dict[str, Any]] = {"SHAP-CAM": {"n_orderings": 10, "seed": 0}}

MethodSpec = str | type[BaseCAM]  # also a sanity map's name (cam_core.evaluation.reference_maps), e.g. "Box"
_BATCH_FILE = re.compile(r"^batch_(\d{5})\.json$")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`evaluate`: says how many batches are kept in the cache and how to resume."""

    def __init__(self, done: int, total: int, folder: Path | None) -> None:
        self.done, self.total, self.folder = done, total, folder
        if folder is not None:
            text = (f"interrupted: {done} of {total} batches are cached in {folder}; rerun the same command "
                    "(same arguments) to resume from there")
        else:
            text = (f"interrupted after {done} of {total} batches; nothing is kept (no cache): pass a cache "
                    "folder (cache=True, or --cache auto) to make a run resumable")
        super().__init__(text)


# ---- arguments ------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--n-images -5`` is an error, not "every image")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _check_n_images(n_images: Any, bench: Any) -> None:
    """``n_images`` is None (every image) or a positive integer no larger than the benchmark."""
    import numbers

    if n_images is None:
        return
    if isinstance(n_images, bool) or not isinstance(n_images, numbers.Integral) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer (or None for every image), got {n_images!r}")
    if n_images > len(bench):
        raise ValueError(f"n_images={n_images}, but {getattr(bench, 'name', 'the benchmark')} holds "
                         f"{len(bench)} images: ask for at most {len(bench)} (or None for all of them)")


def _method_factory(spec: MethodSpec) -> tuple[str, Callable[..., BaseCAM]]:
    """(table name, factory) for a method name or a BaseCAM subclass: factory(model, target_layer, **kw)
    builds a CAM; a sanity map's name (``"Box"``, ...) gives its :class:`ReferenceMap` class instead."""
    if isinstance(spec, str):
        from cam_core.methods.registry import method_class

        if (ref := reference_maps.lookup(spec)) is not None:
            return ref.name, ref
        try:
            return method_class(spec)  # (canonical table name, class): "liftcam" -> "LIFT-CAM"
        except ValueError as err:
            raise ValueError(f"{err} (or a sanity map: {', '.join(reference_maps.SANITY_MAPS)})") from None
    if isinstance(spec, type) and issubclass(spec, BaseCAM):
        return spec.name, spec
    raise ValueError(f"a method must be a table name such as 'LIFT-CAM' or a BaseCAM subclass, got {spec!r}")


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    out = []
    for m in metrics:
        m, _ = lookup(m, METRICS, "metric")  # case-insensitive, like method names: "ic" -> "IC"
        if m not in out:
            out.append(m)
    return out


def cache_config(
    bench: Any,
    methods: Sequence[str],
    metrics: Sequence[str],
    n_images: int | None,
    seed: int,
    batch_size: int,
    method_kwargs: dict[str, dict[str, Any]],
    target: str,
    **options: Any,
) -> dict:
    """Everything that determines the numbers of a run (what the cache key hashes)."""
    import cam_core

    return {
        "benchmark": bench.name,
        "arch": getattr(bench, "arch", None),
        "model": getattr(bench, "model_id", None),  # which trained model (seed, recipe, weights)
        "dataset_size": len(bench),
        "target_layer": bench.target_layer,
        "methods": list(methods),
        "metrics": list(metrics),
        "n_images": n_images,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "method_kwargs": {k: method_kwargs.get(k, {}) for k in methods},
        "target": target,
        **options,
        "version": cam_core.__version__,
        "tie_break": M.TIE_BREAK,
    }


def _key_text(value: Any) -> str:
    """How a non-JSON value enters the cache key: a tensor by its dtype, shape and a hash of its
    contents (``str`` abbreviates large tensors, so two different backgrounds could share a key)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        t = t.float() if t.dtype == torch.bfloat16 else t  # numpy has no bfloat16
        digest = hashlib.sha256(t.numpy().tobytes())
        return f"tensor({t.dtype}, {tuple(t.shape)}, sha256={digest.hexdigest()[:16]})"
    return str(value)


def cache_key(config: dict) -> str:
    """A short stable hash of a run's configuration."""
    blob = json.dumps(config, sort_keys=True, default=_key_text)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- the runner ---------------------------------------------------------------------------------
def evaluate(
    bench: Any,
    methods: Sequence[MethodSpec] | None = None,
    metrics: Sequence[str] | None = None,
    n_images: int | None = 1000,
    seed: int = 0,
    cache: str | Path | bool | None = True,
    batch_size: int = 8,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    target: str = "predicted",
    progress: bool = True,
    device: str | torch.device | None = None,
    *,
    baseline: str = "zero",
    steps: int = 40,
    pointing_tolerance: float | None = None,
    reference: MethodSpec = "SHAP-CAM",
    forward_batch_size: int | None = None,
    executor: str = "serial",
    ray_address: str | None = None,
    shard_size: int | None = None,
) -> pd.DataFrame:
    """Evaluate CAM ``methods`` on ``n_images`` seeded images of ``bench`` with ``metrics``.

    Args:
        bench: a :class:`cam_core.benchmarks.base.Benchmark`.
        methods: table names (``cc.METHODS``) or BaseCAM subclasses; default ``cc.PAPER_METHODS``.
        metrics: any of :data:`METRICS`; default :data:`DEFAULT_METRICS`. ``"cosine"`` compares each
            method's alpha with ``reference``'s (Table 2; the reference is computed even if not listed).
        n_images, seed: the benchmark's seeded subset (``bench.subset``); None = every image.
        cache: True = ``<results dir>/cache/<bench>_<arch>_<hash>``; a folder = ``<folder>/<...hash>``;
            None/False = no cache (nothing written, nothing resumed).
        batch_size: images per batch (each method is called once per batch). 8, the fast one on the CPU:
            the tiled insertion/deletion batches (4 x batch_size rows) of larger batches outgrow the caches
            (issue 15: 80 images took 20 CPU s at 8, 44 at 32, 53 at 128; bench/evaluate.py measures it).
        method_kwargs: per-method keyword arguments, merged over :data:`DEFAULT_METHOD_KWARGS`
            (SHAP-CAM: 10 orderings, seed 0).
        target: ``"predicted"`` (top-1 of the model, the paper's choice) or ``"label"`` (the
            ground-truth class; single-label benchmarks only).
        device: None = the benchmark's device; anything else must match it (load the benchmark on
            the device you want: the runner does not move the caller's model).
        baseline: what a removed pixel becomes in every perturbation metric (IC/AD/ADD, insertion/deletion,
            AD@q/ADD@q): ``"zero"`` (black, the default), ``"mean"``, ``"blur"`` or ``"road"``
            (:data:`cam_core.metrics.BASELINES`); part of the cache key.
        steps: insertion/deletion steps (:func:`cam_core.metrics.insertion_deletion`).
        pointing_tolerance: hit/miss tolerance in px (None: 15 px at 224 px, scaled).
        forward_batch_size: rows per forward pass when scoring perturbed images (default 4 * batch_size).
        executor: ``"serial"`` (this process) or ``"ray"`` (shards of ``shard_size`` images as Ray tasks
            on the cluster at ``ray_address``, a local one when None; same cache, same table:
            :mod:`cam_core.evaluation.ray_executor`). Needs ``pip install -e ".[distributed]"``.

    Returns:
        A tidy DataFrame, one row per (image, method, metric): ``image`` (dataset index), ``method``,
        ``metric``, ``value`` (per image: IC an indicator, AD/ADD fractions, AUCs, energy share,
        pointing hit; NaN where undefined, e.g. no box of the target class), ``target`` (class explained).
        ``attrs``: ``summary`` ({method: {metric: aggregate}}, see :func:`summarize`), ``timings``
        (seconds per method, summed over batches, including batches read from the cache), ``config``,
        ``cache`` (the folder, or None). attrs hold plain dicts (pandas compares attrs on concat).
    """
    specs = _methods(methods)
    metrics = _check_metrics(DEFAULT_METRICS if metrics is None else metrics)
    _check_run(bench, [n for n, _ in specs], metrics, n_images, target, baseline, batch_size, device)
    _check_executor(executor, ray_address, shard_size)
    kwargs = {k: dict(v) for k, v in DEFAULT_METHOD_KWARGS.items()}
    for k, v in (method_kwargs or {}).items():
        kwargs.setdefault(k, {}).update(v)
    ref = _method_factory(reference) if "cosine" in metrics else None
    opts = {"baseline": baseline, "steps": int(steps), "pointing_tolerance": pointing_tolerance,
            "forward_batch_size": int(forward_batch_size or 4 * batch_size)}
    plan = _plan(bench, specs, metrics, kwargs, target, ref, opts, n_images=n_images, seed=seed,
                 batch_size=batch_size, cache=cache)
    records = [(_read_batch(plan.folder, i, c) if plan.folder is not None else None)
               for i, c in enumerate(plan.chunks)]
    where = None
    if executor == "ray":
        from cam_core.evaluation import ray_executor

        where = ray_executor.run(bench, plan.chunks, records, plan.folder, plan.job(), address=ray_address,
                                 shard_size=shard_size, progress=progress, desc=_desc(bench))
    else:
        _run_serial(bench, plan, records, progress)
    return _collect(records, plan, where)


# ---- the steps of evaluate: validate, plan, run, collect ------------------------------------------
@dataclass
class _Plan:
    """What a run computes (the batches, each method and metric) and where it keeps each batch."""

    specs: list[tuple[str, Callable[..., BaseCAM]]]
    metrics: list[str]
    method_kwargs: dict[str, dict[str, Any]]
    target: str
    reference: tuple[str, Callable[..., BaseCAM]] | None
    opts: dict[str, Any]
    config: dict  # what the cache key hashes (cache_config)
    chunks: list[list[int]]  # batch i = these dataset indices
    folder: Path | None  # the cache folder, or None

    def job(self) -> dict[str, Any]:
        """The keyword arguments of :func:`cam_core.evaluation.batches._run_batch` besides the benchmark
        and the batch (what every executor passes it)."""
        return {"methods": self.specs, "metrics": self.metrics, "method_kwargs": self.method_kwargs,
                "target": self.target, "reference": self.reference, "opts": self.opts}


def _methods(methods: Sequence[MethodSpec] | None) -> list[tuple[str, Callable[..., BaseCAM]]]:
    """(table name, factory) per method (default: the paper's six); names must be distinct."""
    from cam_core.methods.registry import PAPER_METHODS

    specs = [_method_factory(m) for m in (PAPER_METHODS if methods is None else methods)]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"methods must have distinct names; got {names}")
    return specs


def _check_run(bench: Any, names: list[str], metrics: list[str], n_images: Any, target: str, baseline: str,
               batch_size: int, device: str | torch.device | None) -> None:
    """Every argument of a run that can be wrong, checked before any batch: ``ValueError`` says which."""
    from cam_core.runtime import resolve_device

    reference_maps.check_benchmark(bench, names)
    if target not in ("predicted", "label"):
        raise ValueError(f"target must be 'predicted' (top-1) or 'label' (ground truth), got {target!r}")
    if target == "label" and getattr(bench, "multilabel", False):
        raise ValueError(
            "target='label' needs a single-label benchmark; this one is multi-label: "
            "use target='predicted' (the paper's choice)"
        )
    M.check_baseline(baseline)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_n_images(n_images, bench)
    if device is not None:
        dev, bdev = resolve_device(device), torch.device(bench.device)
        if dev.type != bdev.type or (
            dev.index is not None and bdev.index is not None and dev.index != bdev.index
        ):
            raise ValueError(
                f"device={device!r} but the benchmark's model is on {bdev}; load the benchmark with "
                f"cc.benchmarks.load(..., device={str(dev)!r}) (evaluate does not move your model)"
            )


def _check_executor(executor: str, ray_address: str | None, shard_size: int | None) -> None:
    if executor not in ("serial", "ray"):
        raise ValueError(f"executor must be 'serial' (this process) or 'ray' (Ray tasks), got {executor!r}")
    if executor != "ray" and (ray_address is not None or shard_size is not None):
        raise ValueError("ray_address and shard_size are settings of executor='ray'; pass executor='ray'")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 image, got {shard_size}")


def _plan(bench: Any, specs: list, metrics: list[str], kwargs: dict[str, dict[str, Any]], target: str,
          ref: tuple | None, opts: dict[str, Any], *, n_images: int | None, seed: int, batch_size: int,
          cache: str | Path | bool | None) -> _Plan:
    """The run's configuration and cache key, its batches of the benchmark's seeded subset, and its cache
    folder (created, with a manifest of the configuration and the batches)."""
    from cam_core.evaluation import results

    config = cache_config(
        bench, [n for n, _ in specs], metrics, n_images, seed, batch_size, kwargs, target,
        baseline=opts["baseline"], steps=opts["steps"], pointing_tolerance=opts["pointing_tolerance"],
        reference=ref[0] if ref else None, reference_kwargs=kwargs.get(ref[0], {}) if ref else None,
        # issue 20: a fill other than black reaches IC/AD/ADD too (runs with "zero" keep their keys)
        **({"fill_scope": "all-perturbation-metrics"} if opts["baseline"] != "zero" else {}),
    )
    indices = bench.subset(n_images, seed)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    folder: Path | None = None
    if cache:
        base = results.results_dir() / "cache" if cache is True else Path(cache)
        folder = base / f"{bench.name}_{getattr(bench, 'arch', 'model')}_{cache_key(config)}"
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            results.write_text(
                manifest, json.dumps({"config": config, "batches": chunks}, indent=1, default=str)
            )
    return _Plan(specs, metrics, kwargs, target, ref, opts, config, chunks, folder)


def _desc(bench: Any) -> str:
    return f"{bench.name}/{getattr(bench, 'arch', '')}"


def _run_serial(bench: Any, plan: _Plan, records: list[dict | None], progress: bool) -> None:
    """Fill the missing ``records`` in this process, batch by batch (each written to the cache as it
    finishes); Ctrl-C raises :class:`Interrupted`, which says what is kept."""
    from cam_core.evaluation import results

    todo = [i for i, r in enumerate(records) if r is None]
    bar = _progress(len(plan.chunks), len(plan.chunks) - len(todo), progress, _desc(bench))
    try:
        for i in todo:
            chunk = plan.chunks[i]
            batch = next(iter(bench.images(indices=chunk, batch_size=len(chunk))))
            rec = {"index": chunk, **_run_batch(bench, batch, **plan.job())}
            if plan.folder is not None:
                results.write_text(_batch_path(plan.folder, i), json.dumps(rec))
            records[i] = rec
            bar.update(1)
    except KeyboardInterrupt:
        raise Interrupted(sum(r is not None for r in records), len(plan.chunks), plan.folder) from None
    finally:
        bar.close()


def _collect(records: list[dict | None], plan: _Plan, where: dict | None) -> pd.DataFrame:
    """The batches' rows as one tidy frame, with its attrs: timings, config, cache, executor, summary."""
    df = _frame([r for r in records if r is not None])
    timings: dict[str, float] = {}
    for r in records:
        for k, v in (r or {}).get("timings", {}).items():
            timings[k] = timings.get(k, 0.0) + float(v)
    df.attrs["timings"] = timings
    df.attrs["config"] = json.loads(json.dumps(plan.config, default=str))
    df.attrs["cache"] = str(plan.folder) if plan.folder is not None else None
    if where is not None:
        df.attrs["executor"] = where
    summary = summarize(df, wide=True)
    df.attrs["summary"] = {m: {k: float(v) for k, v in row.items()} for m, row in summary.iterrows()}
    return df


def _progress(total: int, done: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm  # plain tqdm: tqdm.auto needs ipywidgets in notebooks

    return tqdm(total=total, initial=done, disable=not enabled, desc=f"evaluate {desc}", unit="batch")


def _frame(records: list[dict]) -> pd.DataFrame:
    cols = ["image", "method", "metric", "value", "target"]
    parts = [pd.DataFrame(r["rows"], columns=cols) for r in records]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    return df.astype(
        {"image": "int64", "method": "object", "metric": "object", "value": "float64", "target": "int64"}
    )


# ---- command line -------------------------------------------------------------------------------
def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="the paper's tables (IC/AD/ADD, insertion/deletion, pointing games) "
        "for CAM methods on a benchmark; resumable",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--benchmark", default="shapes-single", help="benchmark name (see cc.benchmarks.available())"
    )
    p.add_argument("--arch", default=None, help="model architecture of the benchmark, e.g. vgg or resnet")
    p.add_argument("--data-dir", default=None, help="data folder for benchmarks that read files")
    p.add_argument("--methods", nargs="+", default=None, help="table names; default: the paper's six")
    p.add_argument("--metrics", nargs="+", default=None, help=f"any of {', '.join(METRICS)}")
    p.add_argument("--n-images", type=_positive_int, default=1000,
                   help="images of the benchmark's seeded subset (1 .. the benchmark's size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=8,
                   help="images per batch (default 8: fast on a CPU)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted")
    p.add_argument("--baseline", choices=M.BASELINES, default="zero", help="what a removed pixel becomes in every perturbation metric (default zero: black)")
    p.add_argument("--method-kwargs", default=None, help='JSON, e.g. \'{"SHAP-CAM": {"n_orderings": 10}}\'')
    p.add_argument("--cache", default="auto", help="cache folder; 'auto' = results/cache, 'none' = no cache")
    p.add_argument(
        "--out",
        default=None,
        help="CSV of per-image values (default results/evaluate_<bench>_<arch>.csv);"
        " the summary goes beside it as <out>.summary.csv",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--executor", choices=("serial", "ray"), default="serial",
                   help="serial: this process; ray: shards of images as Ray tasks (needs '.[distributed]')")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join: auto, HOST:6379 or ray://HOST:10001; default: a local one")
    p.add_argument("--shard-size", type=_positive_int, default=None,
                   help="images per Ray task, in whole batches (default: one batch)")
    p.set_defaults(func=_main)


def _check_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """Refuse a bad argument before any model is loaded, in one line naming the valid values
    (``SystemExit``); returns the parsed ``--method-kwargs``."""
    from cam_core import benchmarks
    from cam_core.runtime import resolve_device

    def refuse(option: str, err: Any) -> SystemExit:
        return SystemExit(f"evaluate: {option}: {err}")

    try:
        resolve_device(args.device)
    except ValueError as err:
        raise refuse("--device", err) from None
    names = benchmarks.available()
    if args.benchmark not in names:
        raise refuse("--benchmark", f"unknown benchmark {args.benchmark!r}; valid names: {', '.join(names)}")
    try:
        for m in args.methods or []:
            _method_factory(m)
    except ValueError as err:
        raise refuse("--methods", err) from None
    try:
        _check_metrics(args.metrics or DEFAULT_METRICS)
    except ValueError as err:
        raise refuse("--metrics", err) from None
    if args.executor != "ray" and (args.ray_address is not None or args.shard_size is not None):
        raise refuse("--ray-address/--shard-size", "settings of the Ray executor: add --executor ray")
    if not args.method_kwargs:
        return None
    try:
        kwargs = json.loads(args.method_kwargs)
    except json.JSONDecodeError as err:
        example = '{"SHAP-CAM": {"n_orderings": 10}}'
        raise refuse("--method-kwargs", f"not JSON ({err}); e.g. '{example}'") from None
    if not isinstance(kwargs, dict) or not all(isinstance(v, dict) for v in kwargs.values()):
        raise refuse("--method-kwargs", 'a JSON object of objects, {"METHOD": {"ARGUMENT": VALUE}}')
    return kwargs


def _summary_text(summary: pd.DataFrame) -> str:
    """Methods x metrics, each cell ``"mean [low, high]"`` (the bootstrap interval), as printed text."""
    import shutil

    from cam_core.evaluation.statistics import with_ci

    cells = summary.assign(cell=with_ci(summary["mean"], summary["ci_low"], summary["ci_high"], ".4g"))
    table = cells.pivot(index="method", columns="metric", values="cell")
    table = table.reindex(index=list(dict.fromkeys(summary["method"])),
                          columns=list(dict.fromkeys(summary["metric"]))).fillna("–")
    table.index.name = table.columns.name = None
    width = shutil.get_terminal_size((120, 24)).columns
    with pd.option_context("display.width", width, "display.max_columns", None, "display.max_colwidth", 40):
        return table.to_string()


def _report(df: pd.DataFrame, summary: pd.DataFrame, args: argparse.Namespace, bench: Any) -> None:
    """What ``evaluate`` prints: the run, the summary with intervals, missing values, method times."""
    n = df["image"].nunique()
    print(
        f"{bench.name} ({getattr(bench, 'arch', '')}), {n} images, seed {args.seed}, target {args.target}, "
        f"baseline {args.baseline}; mean [95% bootstrap interval over images]:"
    )
    print(_summary_text(summary))
    for _, r in summary[summary["n_nan"] > 0].iterrows():
        print(
            f"  {r['method']} / {r['metric']}: {int(r['n_nan'])} of {n} images without a value "
            "(no box of the target class, or no head)"
        )
    print("method time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in df.attrs["timings"].items()))
    if "executor" in df.attrs and args.no_progress:
        print(df.attrs["executor"]["log"])


def _main(args: argparse.Namespace) -> int:
    from cam_core import benchmarks
    from cam_core.evaluation import results

    method_kwargs = _check_args(args)
    kw = {"arch": args.arch} if args.arch else {}
    try:
        bench = benchmarks.load(args.benchmark, data_dir=args.data_dir, device=args.device, **kw)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"evaluate: --benchmark {args.benchmark}: {err}") from None
    try:
        _check_n_images(args.n_images, bench)
    except ValueError as err:
        raise SystemExit(f"evaluate: --n-images: {err}") from None
    cache: str | bool | None = {"auto": True, "none": None}.get(args.cache.lower(), args.cache)
    t0 = time.perf_counter()
    df = evaluate(
        bench,
        methods=args.methods,
        metrics=args.metrics,
        n_images=args.n_images,
        seed=args.seed,
        cache=cache,
        batch_size=args.batch_size,
        method_kwargs=method_kwargs,
        target=args.target,
        progress=not args.no_progress,
        baseline=args.baseline,
        executor=args.executor,
        ray_address=args.ray_address,
        shard_size=args.shard_size,
    )
    wall = time.perf_counter() - t0
    out = (
        Path(args.out)
        if args.out
        else results.path(f"evaluate_{bench.name}_{getattr(bench, 'arch', 'model')}")
    ).resolve()
    summary_out = out.with_suffix(".summary.csv")
    results.atomic_write(out, lambda p: df.to_csv(p, index=False))
    summary = summarize(df)  # long: method, metric, mean, ci_low, ci_high (95% bootstrap), n, n_nan
    results.atomic_write(summary_out, lambda p: summary.to_csv(p, index=False))
    _report(df, summary, args, bench)
    print(f"wall time {wall:.1f} s")
    print(f"per-image values: {out}")
    print(f"summary: {summary_out}")
    return 0


# ---- several trained models -----------------------------------------------------------------------
def evaluate_seeds(benches: Sequence[Any], *args: Any, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` on several independently trained models of one benchmark, on the same seeded
    images, as one frame with a ``model_seed`` column (the benchmark's ``model_seed``, e.g.
    ``cc.benchmarks.load_seeds("shapes-clutter", model_seeds=(0, 1, 2))``); the other arguments are
    :func:`evaluate`'s. :func:`summarize` and :func:`paired` then resample seeds, then images.

    attrs: ``timings`` (summed over the models), ``config`` (the first model's, with ``model_seeds``),
    ``caches`` (one folder per model), ``summary`` (per-seed means averaged)."""
    benches = list(benches)
    if not benches:
        raise ValueError("benches is empty: pass the benchmark loaded once per model seed "
                         "(cc.benchmarks.load_seeds(name, model_seeds=(0, 1, 2)))")
    names = {(b.name, getattr(b, "arch", None)) for b in benches}
    if len(names) > 1:
        raise ValueError(f"evaluate_seeds compares models of ONE benchmark and arch, got {sorted(map(str, names))}")
    seeds = [int(getattr(b, "model_seed", i)) for i, b in enumerate(benches)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"each benchmark must hold another trained model; model seeds: {seeds}")
    parts = [evaluate(b, *args, **kwargs) for b in benches]
    df = pd.concat([p.assign(model_seed=k) for p, k in zip(parts, seeds, strict=True)], ignore_index=True)
    timings: dict[str, float] = {}
    for p in parts:
        for k, v in p.attrs.get("timings", {}).items():
            timings[k] = timings.get(k, 0.0) + float(v)
    df.attrs = {"timings": timings, "config": {**parts[0].attrs.get("config", {}), "model_seeds": seeds},
                "caches": [p.attrs.get("cache") for p in parts]}
    summary = summarize(df, ci=None)
    df.attrs["summary"] = {m: {k: float(v) for k, v in zip(g["metric"], g["mean"], strict=True)}
                           for m, g in summary.groupby("method", sort=False)}
    return df
