"""Strict JSON and TOML writing.

JSON: :func:`jsonable` turns NumPy scalars and arrays, tuples and paths into plain JSON values and
non-finite floats (NaN, ±inf) into ``null``, so every file beckmann writes is valid JSON
(``allow_nan=False``: Python's ``NaN``/``Infinity`` tokens are not JSON and other readers reject
them).

TOML: :func:`toml_dumps` writes a resolved config with ``tomli-w`` and reads it back; the text is
returned only if it parses to the same values (``inf`` and ``-inf`` survive; a NaN is refused,
since it cannot be compared).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI
from beckmann.store.writes import write_on_root

__all__ = [
    "dumps_json",
    "jsonable",
    "read_json",
    "read_summary",
    "toml_dumps",
    "write_json",
    "write_text_atomic",
]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: NumPy -> Python, tuples -> lists, NaN/inf -> ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def dumps_json(data: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``data`` (see :func:`jsonable`)."""
    return json.dumps(jsonable(data), indent=indent, allow_nan=False)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a ``.part`` sibling and a rename. Not collective."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # like a run folder's missing parents
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def write_json(path: str | Path, data: Any, comm: MPI.Comm) -> None:
    """Write ``data`` as strict JSON from rank 0, atomically; collective.

    Raises:
        RuntimeError: On every rank, when the write fails.
    """
    p = Path(path)
    text = dumps_json(data) + "\n"
    write_on_root(comm, p.name, lambda: write_text_atomic(p, text))


def read_json(path: str | Path) -> Any:
    """Read a JSON file (serial helper); a bad file is a ``ValueError`` naming it."""
    from beckmann._resources import regular_file

    p = regular_file(path, "JSON file", max_bytes=256 * 1024**2)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{str(p)!r} is not valid JSON: it is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(p)!r} is not valid JSON ({err})") from err


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Read ``summary.json`` of a run folder (serial helper)."""
    return read_json(Path(run_dir) / "summary.json")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def toml_dumps(cfg: dict[str, Any]) -> str:
    """Serialise a resolved config (nested dicts of TOML values) to TOML text.

    Raises:
        ValueError: A value has no TOML form (``None``, NaN, an object) or would not read back
            as the same value.
    """
    import tomli_w

    try:
        text = tomli_w.dumps(_plain_toml(cfg))
    except TypeError as err:
        raise ValueError(f"cannot write the config as TOML: {err}") from err
    if not _same(tomllib.loads(text), _plain_toml(cfg)):
        raise ValueError("the config does not survive a TOML round trip (NaN or a bad value?)")
    return text


def _plain_toml(obj: Any) -> Any:
    """``obj`` with NumPy values and tuples made plain (non-finite floats are kept)."""
    if isinstance(obj, dict):
        return {str(k): _plain_toml(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain_toml(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain_toml(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
