"""Looking a thing up by its table name, ignoring case, dashes and spaces ("liftcam" is "LIFT-CAM")."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def name_key(name: str) -> str:
    """The form names are compared in: lower case, letters, digits and ``+`` only."""
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


def lookup(name: str, table: Mapping[str, T] | Iterable[str], what: str) -> tuple[str, T]:
    """``(canonical name, value)`` of ``name`` in ``table``, compared by :func:`name_key`
    (a plain list of names is its own table: the value is the canonical name).

    Raises ``ValueError`` ``"unknown {what} {name!r}; valid names: ..."`` when nothing matches.
    """
    if not isinstance(table, Mapping):
        table = {k: k for k in table}
    if not isinstance(name, str):
        raise ValueError(f"a {what} name must be a str, got {type(name).__name__}; "
                         f"valid names: {', '.join(table)}")
    if name in table:
        return name, table[name]
    found = {name_key(k): k for k in table}.get(name_key(name))
    if found is None:
        raise ValueError(f"unknown {what} {name!r}; valid names: {', '.join(table)}")
    return found, table[found]
