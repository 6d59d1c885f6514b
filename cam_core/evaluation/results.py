"""Results files: what the notebooks measure, and what the book's tables and the tests read.

``cc.results.save("04_faithfulness", table)`` writes ``<results dir>/04_faithfulness.csv`` (a
DataFrame; its JSON-able ``attrs`` go beside it in ``04_faithfulness.attrs.json``) or
``04_faithfulness.json`` (a dict / list of plain values); ``cc.results.load(name)`` reads either back.

The results folder is ``$CAM_CORE_RESULTS`` when set, else ``results/`` at the repository root
(the folder holding ``pyproject.toml`` above this package), else ``./results``.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a reader sees the old file or the new one, never half of one. The file gets the
mode any new file gets under the process's umask (``0644`` under ``umask 022``), not the private
``0600`` of a temporary file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ENV_VAR = "CAM_CORE_RESULTS"


def results_dir() -> Path:
    """The results folder (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "results"
    return Path.cwd() / "results"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a results name must be a non-empty string such as '04_faithfulness', got {name!r}")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"results name {name!r} must be relative to the results folder and not contain '..'")
    for suffix in (".csv", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def path(name: str, kind: str = "csv") -> Path:
    """Where results ``name`` lives: ``<results dir>/<name>.<kind>`` (kind ``"csv"`` or ``"json"``)."""
    if kind not in ("csv", "json"):
        raise ValueError(f"kind must be 'csv' or 'json', got {kind!r}")
    return results_dir() / f"{_check_name(name)}.{kind}"


def _umask() -> int:
    """The process's umask (read from ``/proc`` on Linux; elsewhere set and restored at once)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``target``, then ``os.replace`` it into place
    (with the mode ``open`` would have given it: ``0o666`` less the umask)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def write_text(target: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``target``."""
    return atomic_write(target, lambda p: p.write_text(text))


def _jsonable(obj: Any) -> Any:
    """Plain JSON values (a DataFrame becomes a dict {column: {index: value}}); NaN stays NaN."""
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def save(name: str, data: pd.DataFrame | dict | list) -> Path:
    """Save a DataFrame as ``<name>.csv`` (+ ``<name>.attrs.json`` for its attrs) or a dict/list as
    ``<name>.json``, atomically; returns the path written."""
    if isinstance(data, pd.DataFrame):
        target = path(name, "csv")
        keep_index = not isinstance(data.index, pd.RangeIndex)
        atomic_write(target, lambda p: data.to_csv(p, index=keep_index))
        attrs_file = target.with_suffix(".attrs.json")
        if data.attrs:
            write_text(attrs_file, json.dumps(_jsonable(dict(data.attrs)), indent=1))
        elif attrs_file.exists():
            attrs_file.unlink()
        return target
    if isinstance(data, dict | list):
        return write_text(path(name, "json"), json.dumps(_jsonable(data), indent=1))
    raise ValueError(f"results.save takes a pandas DataFrame, a dict or a list; got {type(data).__name__}")


def load(name: str) -> pd.DataFrame | dict | list:
    """Read results ``name`` back (the CSV as a DataFrame with its attrs, or the JSON value)."""
    csv, js = path(name, "csv"), path(name, "json")
    if csv.is_file():
        df = pd.read_csv(csv)
        attrs_file = csv.with_suffix(".attrs.json")
        if attrs_file.is_file():
            df.attrs.update(json.loads(attrs_file.read_text()))
        return df
    if js.is_file():
        return json.loads(js.read_text())
    raise FileNotFoundError(f"no results named {name!r}: neither {csv} nor {js} exists. Run the notebook or "
                            f"command that produces it (or set ${ENV_VAR} to the folder that holds it).")
