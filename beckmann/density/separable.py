r"""Separated forms of an :class:`~beckmann.density.expression.Expression` in 2D, for sweeps.

:func:`separate` rewrites ``f(x, y; θ)`` as a short sum of products

.. math:: f(x, y; \theta) = \sum_{r=1}^{R} s_r(\theta)\, u_r(x; \theta)\, v_r(y; \theta),

read off the syntax tree (the text is never evaluated): ``+ -`` add terms, ``*`` multiplies
them out, ``/`` by one product divides factor by factor, an integer power of one product is
taken factor by factor (of a sum, ``0 ≤ p ≤ 4``, multiplied out), ``exp`` of a sum of
one-coordinate terms is the product of their ``exp``, and ``cos, sin, cosh, sinh`` of
``A(x) + B(y)`` follow the addition theorems (two terms). A sub-tree in one coordinate (or none)
is one factor, compiled as the expression compiles it. On the nodes of a tensor grid ``X × Y``
each factor needs only ``len(X)`` (or ``len(Y)``) values per θ, not ``len(X)·len(Y)``: the
reduced sweep's certificate uses this (:mod:`beckmann.sweep.tensor`). The form equals the
expression as a real function; in floating point the two agree to round-off. Not collective.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.density.expression import UNARY, Expression, binary_operation

__all__ = ["Separated", "separate"]

FloatArray = npt.NDArray[np.float64]
_Node = Callable[[Mapping[str, Any]], Any]
#: A factor: its closure and the parameters it reads.
_Factor = tuple[_Node, frozenset[str]]
#: A term: factors keyed by group, ``"x"``, ``"y"`` or ``""`` (free of the coordinates).
_Term = dict[str, _Factor]

_GROUPS = ("", "x", "y")
#: Addition theorems ``g(A + B) = Σ p(A) q(B)`` of the functions :func:`separate` splits.
_ADDITION: dict[str, tuple[tuple[float, str, str], ...]] = {
    "cos": ((1.0, "cos", "cos"), (-1.0, "sin", "sin")),
    "sin": ((1.0, "sin", "cos"), (1.0, "cos", "sin")),
    "cosh": ((1.0, "cosh", "cosh"), (1.0, "sinh", "sinh")),
    "sinh": ((1.0, "sinh", "cosh"), (1.0, "cosh", "sinh")),
}


def _constant(value: float) -> _Node:
    k = np.float64(value)
    return lambda env: k


class _NotSeparable(Exception):
    """A node outside the separated forms (or more than the allowed terms)."""


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _mul(a: _Factor | None, b: _Factor) -> _Factor:
    if a is None:
        return b
    fa, fb = a[0], b[0]
    return (lambda env: np.multiply(fa(env), fb(env))), a[1] | b[1]


def _scaled(term: _Term, c: float) -> _Term:
    k = np.float64(c)
    return {**term, "": _mul(term.get(""), ((lambda env: k), frozenset()))}


class _Splitter:
    def __init__(self, expr: Expression, params: frozenset[str], max_terms: int) -> None:
        self.expr = expr
        self.params = params
        self.max_terms = max_terms

    def _cap(self, terms: list[_Term]) -> list[_Term]:
        if len(terms) > self.max_terms:
            raise _NotSeparable
        return terms

    def leaf(self, node: ast.AST, group: str) -> list[_Term]:
        return [{group: (self.expr.compile_node(node), frozenset(_names(node) & self.params))}]

    def times(self, left: list[_Term], right: list[_Term]) -> list[_Term]:
        out = []
        for a in left:
            for b in right:
                t = dict(a)
                for g, f in b.items():
                    t[g] = _mul(t.get(g), f)
                out.append(t)
        return self._cap(out)

    def split(self, node: ast.AST) -> list[_Term]:
        coords = _names(node) & {"x", "y", "z"}
        if "z" in coords:
            raise _NotSeparable
        if len(coords) <= 1:
            return self.leaf(node, next(iter(coords), ""))
        if isinstance(node, ast.UnaryOp):
            inner = self.split(node.operand)
            return inner if isinstance(node.op, ast.UAdd) else [_scaled(t, -1.0) for t in inner]
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            return self.call(node.func.id, self.split(node.args[0]))
        raise _NotSeparable

    def binop(self, node: ast.BinOp) -> list[_Term]:
        if isinstance(node.op, ast.Add | ast.Sub):
            right = self.split(node.right)
            if isinstance(node.op, ast.Sub):
                right = [_scaled(t, -1.0) for t in right]
            return self._cap(self.split(node.left) + right)
        if isinstance(node.op, ast.Mult):
            return self.times(self.split(node.left), self.split(node.right))
        if isinstance(node.op, ast.Div):
            den = self.split(node.right)
            if len(den) != 1:
                raise _NotSeparable
            out = []
            for t in self.split(node.left):
                t = dict(t)
                for g, (fd, used) in den[0].items():
                    if g in t:
                        fn = t[g][0]
                        t[g] = ((lambda env, fn=fn, fd=fd: np.divide(fn(env), fd(env))),
                                t[g][1] | used)
                    else:
                        t[g] = ((lambda env, fd=fd: np.divide(1.0, fd(env))), used)
                out.append(t)
            return out
        if (isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant)
                and type(node.right.value) is int):
            p = node.right.value
            base = self.split(node.left)
            if len(base) == 1:  # (u v)^p = u^p v^p for an integer p: factor by factor
                op = binary_operation(node)
                k = np.float64(p)
                return [{g: ((lambda env, f=f: op(f(env), k)), used)
                         for g, (f, used) in base[0].items()}]
            if 0 <= p <= 4:
                out: list[_Term] = [{}]
                for _ in range(p):
                    out = self.times(out, base)
                return out
        raise _NotSeparable

    def call(self, fname: str, arg: list[_Term]) -> list[_Term]:
        # the argument as one sum per group: every term must lie in one coordinate (θ-only
        # terms go with the first coordinate group present)
        sums: dict[str, list[_Term]] = {}
        for t in arg:
            coords = [g for g in t if g]
            if len(coords) > 1:
                raise _NotSeparable
            sums.setdefault(coords[0] if coords else "", []).append(t)
        if fname == "exp":
            return [{g: self._apply(UNARY["exp"], terms, g) for g, terms in sums.items()}]
        if fname in _ADDITION and "x" in sums and "y" in sums:
            a = sums["x"] + sums.get("", [])
            b = sums["y"]
            return self._cap([
                {"": (_constant(sign), frozenset()),
                 "x": self._apply(UNARY[p], a, "x"), "y": self._apply(UNARY[q], b, "y")}
                for sign, p, q in _ADDITION[fname]
            ])
        raise _NotSeparable

    @staticmethod
    def _apply(f: Callable[[Any], Any], terms: list[_Term], group: str) -> _Factor:
        """``f(Σ terms)`` as one factor of ``group`` (each term a product of its factors)."""
        prods = []
        used: frozenset[str] = frozenset()
        for t in terms:
            fs = [t[g][0] for g in _GROUPS if g in t]
            used = used.union(*(t[g][1] for g in t))
            prods.append(fs)

        def value(env: Mapping[str, Any]) -> Any:
            acc: Any = 0.0
            for fs in prods:
                p = fs[0](env)
                for h in fs[1:]:
                    p = np.multiply(p, h(env))
                acc = np.add(acc, p)
            return f(acc)

        return value, used


class Separated:
    """``f = Σ_r s_r(θ) u_r(x; θ) v_r(y; θ)`` (:func:`separate`). Not collective.

    Attributes:
        names: The sweep parameters (columns of the θ blocks).
        uses: Per term, the parameters each factor reads (``{"": ..., "x": ..., "y": ...}``).
    """

    def __init__(self, terms: list[_Term], names: tuple[str, ...], fixed: dict[str, float]):
        self._terms = terms
        self.names = names
        self._fixed = {k: np.float64(v) for k, v in fixed.items()}
        self.uses = [{g: t[g][1] if g in t else frozenset() for g in _GROUPS} for t in terms]

    def __len__(self) -> int:
        return len(self._terms)

    def factor(self, r: int, group: str, coord: FloatArray, T: FloatArray) -> FloatArray:
        """``(K, n)`` values of term ``r``'s factor ``group`` for the θ rows of ``T``.

        ``"x"``/``"y"``: at ``coord``; ``""``: ``coord`` is ignored and ``n = 1``. Ones if the
        term has no such factor.
        """
        T = np.asarray(T, dtype=np.float64).reshape(-1, len(self.names))
        n = 1 if group == "" else len(coord)
        f = self._terms[r].get(group)
        if f is None:
            return np.ones((T.shape[0], n))
        env: dict[str, Any] = dict(self._fixed)
        env.update({k: np.ascontiguousarray(T[:, i : i + 1]) for i, k in enumerate(self.names)})
        if group:
            env[group] = np.asarray(coord, dtype=np.float64)[None, :]
        with np.errstate(all="ignore"):
            v = f[0](env)
        return np.array(np.broadcast_to(v, (T.shape[0], n)), dtype=np.float64)

    def evaluate(self, X: FloatArray, Y: FloatArray, T: FloatArray) -> FloatArray:
        """``(K, len(X), len(Y))``: the form on the grid ``X × Y`` (tests, small grids)."""
        out = 0.0
        for r in range(len(self)):
            s = self.factor(r, "", X, T)[:, 0]
            out = out + s[:, None, None] * (self.factor(r, "x", X, T)[:, :, None]
                                            * self.factor(r, "y", Y, T)[:, None, :])
        return np.asarray(np.broadcast_to(out, (np.shape(T)[0], len(X), len(Y))))


def separate(
    expr: Expression,
    names: list[str] | tuple[str, ...],
    params: Mapping[str, float] | None = None,
    *,
    max_terms: int = 8,
) -> Separated | None:
    """The expression as ``Σ_r s_r(θ) u_r(x; θ) v_r(y; θ)`` when it is one (module docstring).

    ``params`` gives the parameters other than ``names`` (fixed).

    Returns:
        The form, or ``None``: the expression uses ``z``, mixes ``x`` and ``y`` inside another
        function (``exp(x*y)``, ``sqrt(x + y)``, ...) or in a divisor of several terms, a
        parameter has no value, or it needs more than ``max_terms`` terms.
    """
    sweep = tuple(names)
    fixed = dict(params or {})
    if expr.parameter_names - set(sweep) - fixed.keys():
        return None
    try:
        terms = _Splitter(expr, frozenset(sweep), max_terms).split(expr.tree)
    except (_NotSeparable, RecursionError):
        return None
    return Separated(terms, sweep, fixed)
