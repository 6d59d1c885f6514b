"""The evaluation runner on a Ray cluster: shards of images as Ray tasks, one shared cache.

    table = cc.evaluate(bench, ..., executor="ray")                       # a local cluster (this machine)
    table = cc.evaluate(bench, ..., executor="ray", ray_address="auto")   # the cluster `ray start` started

The seeded image list is cut into the serial runner's batches (``batch_size`` images each, the
unit of :mod:`cam_core.evaluation`'s cache); whole batches make a shard (``shard_size`` images),
and each shard is one Ray task that asks for one GPU when the benchmark's model is on CUDA, one
CPU otherwise. A task computes each batch of its shard that is not in the cache yet with the
serial runner's own code (``evaluation._run_batch``) and writes it atomically (temporary file +
``os.replace``) into the same content-addressed cache folder; it also returns the records, and
the driver writes any the worker's file system did not share. Hence:

- the table equals the serial one for any number of workers and any shard size (the batches, the
  only thing the numbers depend on, are the same; values agree to float rounding);
- a worker that dies has its shard retried (``max_retries``); the retry reads the batches the dead
  worker finished from the cache, so nothing is lost and no batch is computed twice into it;
- an interrupted driver (Ctrl-C) cancels the shards still queued, and the next run, serial or on
  Ray, on this cluster or another one sharing the folder, resumes from the cache.

Ray is an optional dependency: ``pip install -e ".[distributed]"``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cam_core.evaluation import results
from cam_core.evaluation.batches import _batch_path, _read_batch, _run_batch

_log = logging.getLogger(__name__)
INSTALL_HINT = "pip install -e '.[distributed]'  (or: pip install 'ray>=2.60,<3')"
#: a worker process keeps the benchmarks it unpacked (one per run), keyed by the object's id
_WORKER_BENCH: dict[str, Any] = {}


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ImportError(f"executor='ray' needs Ray, which is not installed here: {INSTALL_HINT}") from err
    return ray


def connect(address: str | None = None, **init_kwargs: Any) -> Any:
    """Ray, initialised: reuse this process's connection, else join ``address`` or start a local cluster.

    ``address=None``: ``$RAY_ADDRESS`` or the cluster ``ray start`` started on this machine, else a new
    local cluster with every core and GPU here (``init_kwargs``, e.g. ``num_cpus=2``, go to ``ray.init``);
    ``"auto"``: an existing cluster only; ``"HOST:6379"`` / ``"ray://HOST:10001"``: that cluster.
    """
    ray = import_ray()
    if not ray.is_initialized():
        with _patient_agents():
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, **init_kwargs)
    return ray


#: Ray's own setting (``RAY_<name>`` environment variables override its defaults) for how long a raylet
#: waits for its node's agent processes to register; 60 s instead of Ray's short default, for busy machines
AGENT_TIMEOUT = ("RAY_agent_register_timeout_ms", "60000")


@contextlib.contextmanager
def _patient_agents() -> Iterator[None]:
    """During ``ray.init`` only: the raylet a local cluster starts inherits ``AGENT_TIMEOUT`` (unless the
    user set it). Ray's agent processes import jsonschema (1-2 CPU-s each where Jupyter's optional extras
    are installed); on a busy 2-core machine that kept the agent from registering within Ray's default
    and the local cluster failed to start. A supported Ray setting, nothing written to disk or shadowed."""
    name, value = AGENT_TIMEOUT
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


# ---- the benchmark, shipped once and unpacked on the worker's device ---------------------------
def pack(bench: Any) -> bytes:
    """The benchmark as bytes (torch.save + cloudpickle: tensors by storage, lambdas and local classes
    by value), so that a worker can load it onto its own device with ``map_location``."""
    from ray import cloudpickle

    buf = io.BytesIO()
    torch.save(bench, buf, pickle_module=cloudpickle)
    return buf.getvalue()


def unpack(blob: bytes, device: torch.device) -> Any:
    """The benchmark of :func:`pack` (cloudpickle's output loads with plain pickle), every tensor on
    ``device`` (``bench.device`` set to it)."""
    bench = torch.load(io.BytesIO(blob), map_location=device, pickle_module=pickle, weights_only=False)
    bench.device = device
    return bench


def _worker_device(device_type: str) -> torch.device:
    if device_type == "cuda":  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
        return torch.device("cuda", 0)
    return torch.device(device_type)


# ---- one shard (runs in a Ray worker) --------------------------------------------------------------
def run_shard(bench_ref: list, shard: list[tuple[int, list[int]]], folder: str | None, device_type: str,
              job: dict[str, Any]) -> dict[str, Any]:
    """Every batch ``(i, image indices)`` of ``shard``: read from the cache, or computed and written to it.

    ``bench_ref`` is ``[ObjectRef]`` (wrapped so that Ray does not fetch it for every task: the worker
    unpacks each benchmark once). Returns ``{"records": {i: record}, "computed": [i, ...], "host": ...,
    "cpu_s": the worker's CPU seconds}``.
    """
    import ray

    cpu0 = time.process_time()
    key = bench_ref[0].hex()
    if key not in _WORKER_BENCH:
        _WORKER_BENCH.clear()  # one benchmark at a time per worker
        _WORKER_BENCH[key] = unpack(ray.get(bench_ref[0]), _worker_device(device_type))
    bench = _WORKER_BENCH[key]
    if device_type == "cpu":  # the task's CPU slots, not every core of the node
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    path = Path(folder) if folder is not None else None
    records, computed, unwritable = {}, [], False
    for i, index in shard:
        rec = _read_batch(path, i, index) if path is not None else None
        if rec is None:
            batch = next(iter(bench.images(indices=index, batch_size=len(index))))
            rec = {"index": index, **_run_batch(bench, batch, **job)}
            computed.append(i)
            if path is not None:
                try:
                    results.write_text(_batch_path(path, i), json.dumps(rec))
                except OSError:  # the driver writes it (a node without the shared folder)
                    unwritable = True
        records[i] = rec
    host = {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}
    return {"records": records, "computed": computed, "host": host, "unwritable": unwritable,
            "cpu_s": time.process_time() - cpu0}


# ---- the driver -------------------------------------------------------------------------------------
def run(bench: Any, chunks: list[list[int]], records: list[dict | None], folder: Path | None,
        job: dict[str, Any], *, address: str | None = None, shard_size: int | None = None,
        max_retries: int = 3, progress: bool = True, desc: str = "") -> dict[str, Any]:
    """Fill the missing ``records`` (batch ``i`` = images ``chunks[i]``) on Ray; returns where shards ran.

    ``job``: the keyword arguments of ``evaluation._run_batch`` besides the benchmark and the batch.
    ``shard_size``: images per task, rounded to whole batches (default: one batch per task).
    """
    ray = connect(address)
    todo = [i for i, r in enumerate(records) if r is None]
    batch = max(len(c) for c in chunks) if chunks else 1
    per = max(1, -(-int(shard_size) // batch)) if shard_size else 1
    shards = [[(i, chunks[i]) for i in todo[k : k + per]] for k in range(0, len(todo), per)]
    device_type = torch.device(bench.device).type
    resources = {"num_gpus": 1} if device_type == "cuda" else {"num_cpus": 1}
    task = ray.remote(max_retries=int(max_retries), **resources)(run_shard)
    bench_ref = ray.put(pack(bench)) if shards else None
    folder_arg = str(folder.resolve()) if folder is not None else None
    pending = {
        task.remote([bench_ref], shard, folder_arg, device_type, job): sum(len(c) for _, c in shard)
        for shard in shards
    }
    total = sum(len(c) for c in chunks)
    bar = _progress(total, total - sum(pending.values()), progress, desc)
    ran: Counter[str] = Counter()
    computed: Counter[str] = Counter()
    cpu_s = 0.0
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                out = ray.get(ref)
                for i, rec in out["records"].items():
                    records[int(i)] = rec
                    if folder is not None and out["unwritable"] and not _batch_path(folder, int(i)).is_file():
                        results.write_text(_batch_path(folder, int(i)), json.dumps(rec))
                where = f"{out['host']['node']} pid {out['host']['pid']}"
                ran[where] += 1
                computed[where] += len(out["computed"])
                cpu_s += out["cpu_s"]
                bar.update(pending.pop(ref))
    except BaseException:
        for ref in pending:  # queued shards are dropped; what finished is in the cache
            ray.cancel(ref)
        raise
    finally:
        bar.close()
    line = (
        f"ray: {len(shards)} shards ({sum(computed.values())} batches computed, {len(chunks) - len(todo)} "
        f"read from the cache) on {len(ran)} workers: "
        + "; ".join(f"{w}: {n} shards, {computed[w]} batches" for w, n in sorted(ran.items()))
    )
    _log.info(line)
    if progress:
        print(line, file=sys.stderr)
    return {"executor": "ray", "shards": len(shards), "workers": dict(ran), "computed": dict(computed),
            "cpu_s": cpu_s, "log": line}


def _progress(total: int, done: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc=f"evaluate {desc} (ray)", unit="image")
