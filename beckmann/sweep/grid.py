"""Parameter grids of a sweep: lists, ``linspace``, ``random``, ``lhs`` and their products.

A ``[sweep.parameters]`` table gives one entry per parameter::

    theta = { linspace = [0.3, 0.7, 8] }   # evenly spaced, both ends included
    s = [0.02, 0.05]                        # explicit values (or one number)
    a = { random = [0.0, 1.0, 16], seed = 1 }   # uniform in [low, high), sorted
    b = { lhs = [-1.0, 1.0, 16], seed = 2 }     # one column of a Latin hypercube

The grid is the product of the parameters' grids, first parameter slowest. Parameters given as
``lhs`` form one joint Latin-hypercube design (they must have the same count) that enters the
product as one axis. The grid's size is computed from the counts before any value is made:
more than :data:`MAX_POINTS` θ, or more than the memory holds, is an error naming the
parameters. Nothing here is collective.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._resources import require_memory

__all__ = ["MAX_POINTS", "Grid", "make_grid"]

#: Most θ a sweep grid may have (each θ is one solve and one stored field).
MAX_POINTS = 1_000_000

FloatArray = npt.NDArray[np.float64]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"x", "y", "z", "pi", "e"}


@dataclass
class Grid:
    """The parameter values of a sweep.

    Attributes:
        names: Parameter names, in config order.
        values: ``(K, m)`` array; row ``i`` is θ number ``i``.
        axes: For a product of 1-D grids, the sorted values of each parameter (used for
            interpolation); ``None`` when a joint (Latin-hypercube) design is part of the grid.
    """

    names: list[str]
    values: FloatArray
    axes: dict[str, list[float]] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def theta(self, i: int) -> dict[str, float]:
        """θ number ``i`` as ``{name: value}``."""
        return {n: float(v) for n, v in zip(self.names, self.values[i], strict=True)}

    def label(self, i: int) -> str:
        """``θ #i (name=value, ...)`` for messages."""
        vals = ", ".join(f"{n}={v:.6g}" for n, v in self.theta(i).items())
        return f"θ #{i} ({vals})"

    def box(self) -> tuple[FloatArray, FloatArray]:
        """The parameter box ``(low, high)``: the smallest box holding every grid point."""
        return self.values.min(axis=0), self.values.max(axis=0)

    def index_of(self, theta: dict[str, float]) -> int | None:
        """Grid index of ``theta`` (relative tolerance 1e-12), or ``None``."""
        v = np.array([theta[n] for n in self.names])
        scale = np.maximum(np.abs(self.values).max(axis=0), 1.0)
        hit = np.flatnonzero(np.all(np.abs(self.values - v) <= 1e-12 * scale, axis=1))
        return int(hit[0]) if hit.size else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``sweep.json``)."""
        return {"names": self.names, "values": self.values.tolist(), "axes": self.axes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_json`."""
        vals = np.asarray(data["values"], dtype=np.float64).reshape(-1, len(data["names"]))
        return cls(list(data["names"]), vals, data.get("axes"))


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {v!r}")
    return int(v)


def _range_spec(name: str, key: str, spec: Any) -> tuple[float, float, int]:
    what = f"sweep parameter {name!r}: {key}"
    if not isinstance(spec, list) or len(spec) != 3:
        raise ValueError(f"{what} must be [low, high, count], got {spec!r}")
    lo, hi = _number(spec[0], f"{what} low"), _number(spec[1], f"{what} high")
    n = _count(spec[2], f"{what} count")
    if n == 0:
        raise ValueError(f"sweep parameter {name!r} has an empty grid ({key} count 0)")
    if key != "linspace" and not lo < hi:
        raise ValueError(f"{what} needs low < high, got {spec!r}")
    return lo, hi, n


def _seed(name: str, spec: dict[str, Any]) -> int:
    s = spec.get("seed", 0)
    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
        raise ValueError(
            f"sweep parameter {name!r}: seed must be a non-negative integer, got {s!r}"
        )
    return int(s)


def _count_of(name: str, spec: Any) -> tuple[str, int]:
    """``(kind, count)`` of one parameter's entry, without making its values."""
    if isinstance(spec, list):
        return "axis", len(spec)
    if isinstance(spec, dict):
        kinds = [k for k in ("linspace", "random", "lhs") if k in spec]
        if len(kinds) == 1:
            raw = spec[kinds[0]]
            if isinstance(raw, list) and len(raw) == 3:
                n = _count(raw[2], f"sweep parameter {name!r}: {kinds[0]} count")
                return ("lhs" if kinds[0] == "lhs" else "axis"), n
    return "axis", 1  # other forms are checked (and refused) by _one_axis


def _check_size(parameters: dict[str, Any]) -> None:
    """Refuse a grid with too many θ before any of its values are made."""
    counts = {name: _count_of(name, spec) for name, spec in parameters.items()}
    axes = [n for kind, n in counts.values() if kind == "axis"]
    lhs = [n for kind, n in counts.values() if kind == "lhs"]
    total = math.prod(axes) * (max(lhs) if lhs else 1)
    if total > MAX_POINTS:
        sizes = " x ".join(f"{name} {n}" for name, (_, n) in counts.items())
        raise ValueError(
            f"the sweep grid has {total:.3g} θ ({sizes}), more than the {MAX_POINTS} a sweep "
            "can hold; lower the counts in [sweep.parameters]"
        )
    require_memory(
        32.0 * total * len(parameters),
        f"the sweep grid of {total} θ",
        "lower the counts in [sweep.parameters]",
    )


def _one_axis(name: str, spec: Any) -> tuple[str, FloatArray]:
    """Return ``(kind, values)`` of one parameter, kind ``"axis"`` or ``"lhs"``."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"sweep parameter {name!r} has an empty grid (empty list)")
        vals = np.array([_number(v, f"sweep parameter {name!r} value") for v in spec])
        if np.unique(vals).size != vals.size:
            raise ValueError(f"sweep parameter {name!r} repeats a value: {spec!r}")
        return "axis", vals
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return "axis", np.array([_number(spec, f"sweep parameter {name!r}")])
    if not isinstance(spec, dict):
        raise ValueError(
            f"sweep parameter {name!r} must be a list or a table with linspace, random or lhs, "
            f"got {spec!r}"
        )
    kinds = [k for k in ("linspace", "random", "lhs") if k in spec]
    extra = set(spec) - {"linspace", "random", "lhs", "seed"}
    if len(kinds) != 1 or extra:
        raise ValueError(
            f"sweep parameter {name!r} needs exactly one of linspace, random, lhs (and "
            f"optionally seed), got keys {sorted(spec)}"
        )
    kind = kinds[0]
    lo, hi, n = _range_spec(name, kind, spec[kind])
    if kind == "linspace":
        if n > 1 and lo == hi:
            raise ValueError(f"sweep parameter {name!r}: linspace {spec[kind]!r} repeats a value")
        return "axis", np.linspace(lo, hi, n)
    rng = np.random.default_rng(_seed(name, spec))
    if kind == "random":
        return "axis", np.sort(lo + (hi - lo) * rng.random(n))
    # One stratum per sample, strata visited in random order: a Latin-hypercube column.
    u = (rng.permutation(n) + rng.random(n)) / n
    return "lhs", lo + (hi - lo) * u


def make_grid(parameters: Any) -> Grid:
    """Build the grid of a ``[sweep.parameters]`` table (see the module docstring).

    Raises:
        ValueError: An empty grid, a bad name or value, or Latin-hypercube parameters of
            different sizes; the message names the parameter.
    """
    if not isinstance(parameters, dict):
        raise ValueError(
            f"[sweep.parameters] must be a table of parameters, got {parameters!r}; e.g. "
            "theta = { linspace = [0.3, 0.7, 8] }"
        )
    if not parameters:
        raise ValueError(
            "[sweep.parameters] is empty: give at least one parameter, e.g. "
            "theta = { linspace = [0.3, 0.7, 8] }"
        )
    names = list(parameters)
    for name in names:
        if not _NAME.match(name) or name in _RESERVED:
            raise ValueError(f"sweep parameter name {name!r} is not a valid free name")
    _check_size(parameters)
    axes: list[tuple[list[str], FloatArray]] = []  # (names, (n, len(names)) values)
    lhs_names: list[str] = []
    lhs_cols: list[FloatArray] = []
    lhs_pos = -1
    for name in names:
        kind, vals = _one_axis(name, parameters[name])
        if kind == "lhs":
            if lhs_cols and vals.size != lhs_cols[0].size:
                raise ValueError(
                    f"sweep parameters {lhs_names[0]!r} and {name!r} form one Latin hypercube "
                    f"and need the same count, got {lhs_cols[0].size} and {vals.size}"
                )
            if lhs_pos < 0:
                lhs_pos = len(axes)
                axes.append(([], np.empty((0, 0))))  # placeholder, filled below
            lhs_names.append(name)
            lhs_cols.append(vals)
        else:
            axes.append(([name], vals.reshape(-1, 1)))
    if lhs_pos >= 0:
        axes[lhs_pos] = (lhs_names, np.column_stack(lhs_cols))
    order = [n for ax_names, _ in axes for n in ax_names]
    # The product, first axis slowest: row r takes row idx[a][r] of axis a.
    idx = np.indices([ax[1].shape[0] for ax in axes]).reshape(len(axes), -1)
    table = np.concatenate([ax[1][idx[a]] for a, ax in enumerate(axes)], axis=1)
    values = table[:, [order.index(n) for n in names]]
    product = all(len(ax_names) == 1 for ax_names, _ in axes)
    grid_axes = (
        {ax_names[0]: sorted(float(v) for v in vals[:, 0]) for ax_names, vals in axes}
        if product
        else None
    )
    return Grid(names, values, grid_axes)
