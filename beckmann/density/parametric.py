"""Parametric views of an :class:`~beckmann.density.expression.Expression`, for sweeps.

:func:`polynomial` splits an expression that is a polynomial in some parameters θ into
θ-independent fields, ``f(x; θ) = Σ_k θ^{e_k} f_k(x)`` (:class:`PolynomialForm`): a sweep
evaluates the ``f_k`` once and each θ is a few multiply-adds (or, with linear solves, a
combination of their solutions). :func:`bind` fixes the points instead: every largest sub-tree
free of θ is evaluated once, and each θ evaluates only the rest. Both read the expression's
syntax tree; neither evaluates user text. Not collective.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.density.expression import BINARY, UNARY, VARIADIC, Expression, binary_operation

__all__ = ["PolynomialForm", "bind", "bind_block", "polynomial"]

FloatArray = npt.NDArray[np.float64]
_Node = Callable[[Mapping[str, Any]], Any]


def polynomial(
    expr: Expression,
    names: list[str] | tuple[str, ...],
    params: Mapping[str, float] | None = None,
    *,
    max_terms: int = 8,
) -> PolynomialForm | None:
    """The expression as a polynomial in the parameters ``names``, when it is one.

    ``f(x; θ) = Σ_k θ^{e_k} f_k(x)`` exactly (as real functions: the floating-point sums are
    regrouped, so values agree with :meth:`Expression.evaluate` to round-off), found on the syntax
    tree: ``+ -`` merge terms, ``*`` multiplies them out, ``/`` and ``**`` (a small integer
    literal power) keep it polynomial when the divisor / exponent is free of ``names``, and
    every function call must have arguments free of ``names``. ``params`` gives the other
    parameters (fixed); a sub-tree free of ``names`` becomes one θ-independent field
    ``f_k``, evaluated once per point set by :meth:`PolynomialForm.fields`.

    Returns:
        The decomposition, or ``None`` when the expression is not such a polynomial (a
        parameter inside a function, a divisor or an exponent) or has more than
        ``max_terms`` monomials.
    """
    sweep = tuple(names)
    fixed = dict(params or {})
    missing = expr.parameter_names - set(sweep) - fixed.keys()
    if missing:
        return None
    try:
        terms = _poly(expr, expr.tree, sweep, max_terms)
    except (_NotPolynomial, RecursionError):
        return None
    return PolynomialForm(sweep, fixed, terms)


def _bind_root(
    expr: Expression,
    x: FloatArray,
    sweep: tuple[str, ...],
    params: Mapping[str, float] | None,
    max_bytes: int,
    inplace: bool = False,
) -> _Node | None:
    """The θ-dependent rest of ``expr`` at ``x`` (its θ-free sub-trees evaluated), or ``None``."""
    fixed = dict(params or {})
    if expr.parameter_names - set(sweep) - fixed.keys():
        return None
    env: dict[str, Any] = {k: np.float64(v) for k, v in fixed.items()}
    env.update(x=x[0], y=x[1], z=x[2])
    budget = [max_bytes]
    try:
        with np.errstate(all="ignore"):
            root = _bound(expr, expr.tree, sweep, env, budget, inplace)
    except (MemoryError, RecursionError):
        return None
    return None if budget[0] < 0 else root


def bind(
    expr: Expression,
    x: FloatArray,
    names: list[str] | tuple[str, ...],
    params: Mapping[str, float] | None = None,
    *,
    max_bytes: int = 1 << 28,
) -> Callable[[Mapping[str, float]], FloatArray] | None:
    """The expression at fixed points ``x`` ``(3, N)`` as a function of ``names``.

    Every largest sub-tree free of ``names`` is evaluated once, here; the returned function
    evaluates only the rest (the θ-dependent arithmetic) for the values of ``names`` it is
    given. ``params`` gives the other parameters. Same values as :meth:`Expression.evaluate`
    (the same operations in the same order).

    Returns:
        ``values(theta) -> (N,)``, or ``None`` when the cached arrays would take more than
        ``max_bytes``, or when a parameter has no value.
    """
    sweep = tuple(names)
    root = _bind_root(expr, x, sweep, params, max_bytes)
    if root is None:
        return None
    n = x.shape[1]

    def values(theta: Mapping[str, float]) -> FloatArray:
        env_t = {k: np.float64(theta[k]) for k in sweep}
        with np.errstate(all="ignore"):
            out = root(env_t)
        return np.array(np.broadcast_to(out, (n,)), dtype=np.float64)

    return values


def bind_block(
    expr: Expression,
    x: FloatArray,
    names: list[str] | tuple[str, ...],
    params: Mapping[str, float] | None = None,
    *,
    max_bytes: int = 1 << 28,
) -> Callable[[FloatArray], FloatArray] | None:
    """As :func:`bind`, for many θ at once: ``values(T)`` with ``T`` ``(K, len(names))``.

    Returns ``(K, N)``, row ``k`` the values at θ ``T[k]`` (columns in ``names`` order): each
    NumPy operation runs once over the whole ``(K, N)`` block, θ broadcast along the rows,
    instead of ``K`` times over ``N`` values. Element by element the same operations as
    :func:`bind` (IEEE arithmetic is exact per element; functions see contiguous arrays as
    there), so the same values.
    """
    sweep = tuple(names)
    root = _bind_root(expr, x, sweep, params, max_bytes, inplace=True)
    if root is None:
        return None
    n = x.shape[1]
    fresh = _made_here(expr.tree, sweep)  # an operation at the root makes a new array

    def values(T: FloatArray) -> FloatArray:
        T = np.asarray(T, dtype=np.float64).reshape(-1, len(sweep))
        env_t = {k: np.ascontiguousarray(T[:, i : i + 1]) for i, k in enumerate(sweep)}
        with np.errstate(all="ignore"):
            out = root(env_t)
        shape = (T.shape[0], n)
        if fresh and isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float64:
            return out  # computed here (not a cached θ-free array): no copy
        return np.array(np.broadcast_to(out, shape), dtype=np.float64)

    return values


def _bound(
    expr: Expression,
    node: ast.AST,
    names: tuple[str, ...],
    env: dict[str, Any],
    budget: list[int],
    inplace: bool = False,
) -> _Node:
    """``node`` with its largest ``names``-free sub-trees evaluated at ``env`` (module use).

    ``inplace``: an operation writes its result into an operand that an operation below it
    made in this call (never a cached θ-free array nor a parameter value), when that operand
    has the result's shape: the same values, half the memory traffic (:func:`bind_block`).
    """
    if not _uses(node, names):
        value = expr.compile_node(node)(env)
        budget[0] -= int(getattr(value, "nbytes", 0))
        if budget[0] < 0:
            raise MemoryError
        return lambda env_t: value
    if isinstance(node, ast.Name):
        name = node.id
        return lambda env_t: env_t[name]
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub):
        return _bound(expr, node.operand, names, env, budget, inplace)
    if isinstance(node, ast.UnaryOp):
        kids, f = [node.operand], np.negative
    elif isinstance(node, ast.BinOp):
        kids, f = [node.left, node.right], binary_operation(node)
    else:
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        kids, fname = list(node.args), node.func.id
        f = UNARY.get(fname) or BINARY.get(fname)
        if f is None:
            fv = VARIADIC[fname]
            args = [_bound(expr, k, names, env, budget, inplace) for k in kids]
            return lambda env_t: functools.reduce(fv, (a(env_t) for a in args))
    args = [_bound(expr, k, names, env, budget, inplace) for k in kids]
    if not inplace or not isinstance(f, np.ufunc):  # a**2 is np.square: no out= there
        if len(args) == 1:
            a0 = args[0]
            return lambda env_t: f(a0(env_t))
        b0, b1 = args
        return lambda env_t: f(b0(env_t), b1(env_t))
    made = [_made_here(k, names) for k in kids]

    def g(env_t: Any) -> Any:
        vals = [a(env_t) for a in args]
        shape = np.broadcast_shapes(*(np.shape(v) for v in vals))
        for v, mine in zip(vals, made, strict=True):
            if mine and isinstance(v, np.ndarray) and v.shape == shape and v.dtype == np.float64:
                return f(*vals, out=v)
        return f(*vals)

    return g


def _made_here(node: ast.AST, names: tuple[str, ...]) -> bool:
    """Whether :func:`_bound` makes ``node``'s value anew at every call (an operation on θ)."""
    while isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub):
        node = node.operand
    return _uses(node, names) and isinstance(node, ast.UnaryOp | ast.BinOp | ast.Call)


class _NotPolynomial(Exception):
    """A node that makes the expression leave the polynomials in the sweep parameters."""


_Terms = dict[tuple[int, ...], _Node]


def _uses(node: ast.AST, names: tuple[str, ...]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _once(f: _Node) -> _Node:
    """``f`` evaluated once per point set (kept in ``env["_once"]``).

    A θ-independent sub-tree shared by several terms (``(1 + θ) g`` gives ``g`` to two) is
    computed once.
    """
    key = object()

    def g(env: Any) -> Any:
        memo = env["_once"]
        if key not in memo:
            memo[key] = f(env)
        return memo[key]

    return g


def _add(a: _Node, b: _Node, sign: float) -> _Node:
    if sign > 0:
        return lambda env: np.add(a(env), b(env))
    return lambda env: np.subtract(a(env), b(env))


def _merge(left: _Terms, right: _Terms, sign: float) -> _Terms:
    out = dict(left)
    for m, g in right.items():
        if m in out:
            out[m] = _add(out[m], g, sign)
        elif sign > 0:
            out[m] = g
        else:
            out[m] = lambda env, g=g: np.negative(g(env))
    return out


def _times(left: _Terms, right: _Terms, max_terms: int) -> _Terms:
    out: _Terms = {}
    for m1, f1 in left.items():
        for m2, f2 in right.items():
            m = tuple(a + b for a, b in zip(m1, m2, strict=True))
            prod: _Node = lambda env, f1=f1, f2=f2: np.multiply(f1(env), f2(env))  # noqa: E731
            out[m] = _add(out[m], prod, 1.0) if m in out else prod
    if len(out) > max_terms:
        raise _NotPolynomial
    return out


def _poly(expr: Expression, node: ast.AST, names: tuple[str, ...], max_terms: int) -> _Terms:
    """The terms ``{exponents: field}`` of ``node`` (raises :class:`_NotPolynomial`)."""
    zero = (0,) * len(names)
    if not _uses(node, names):
        return {zero: _once(expr.compile_node(node))}
    if isinstance(node, ast.Name):  # a sweep parameter
        one = tuple(int(n == node.id) for n in names)
        unit = np.float64(1.0)
        return {one: lambda env: unit}
    if isinstance(node, ast.UnaryOp):
        inner = _poly(expr, node.operand, names, max_terms)
        if isinstance(node.op, ast.UAdd):
            return inner
        return {m: (lambda env, f=f: np.negative(f(env))) for m, f in inner.items()}
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add | ast.Sub):
            left = _poly(expr, node.left, names, max_terms)
            right = _poly(expr, node.right, names, max_terms)
            out = _merge(left, right, 1.0 if isinstance(node.op, ast.Add) else -1.0)
            if len(out) > max_terms:
                raise _NotPolynomial
            return out
        if isinstance(node.op, ast.Mult):
            left = _poly(expr, node.left, names, max_terms)
            return _times(left, _poly(expr, node.right, names, max_terms), max_terms)
        if isinstance(node.op, ast.Div) and not _uses(node.right, names):
            den = expr.compile_node(node.right)
            num = _poly(expr, node.left, names, max_terms)
            return {m: (lambda env, f=f: np.divide(f(env), den(env))) for m, f in num.items()}
        if (
            isinstance(node.op, ast.Pow)
            and isinstance(node.right, ast.Constant)
            and type(node.right.value) is int
            and 0 <= node.right.value <= 4
        ):
            base = _poly(expr, node.left, names, max_terms)
            out = {zero: (lambda env: np.float64(1.0))}
            for _ in range(node.right.value):
                out = _times(out, base, max_terms)
            return out
    raise _NotPolynomial


class PolynomialForm:
    """``f(x; θ) = Σ_k θ^{e_k} f_k(x)``: an expression split into θ-independent fields.

    Built by :meth:`Expression.polynomial`. :meth:`fields` evaluates the ``f_k`` once at a set
    of points; :meth:`coefficients` gives the monomials ``θ^{e_k}`` of one θ, so the values at
    θ are ``coefficients(θ) @ fields(x)``: a few multiply-adds per point instead of the whole
    expression. Not collective.

    Attributes:
        names: The sweep parameters, in the order of the exponents.
        exponents: One tuple of exponents per term.
    """

    def __init__(self, names: tuple[str, ...], fixed: dict[str, float], terms: _Terms) -> None:
        self.names = names
        self._fixed = fixed
        self.exponents = list(terms)
        self._fields = [terms[m] for m in self.exponents]

    def __len__(self) -> int:
        return len(self.exponents)

    def fields(self, x: FloatArray) -> FloatArray:
        """The fields ``f_k`` at points ``x`` ``(3, N)``: shape ``(terms, N)``."""
        env: dict[str, Any] = {k: np.float64(v) for k, v in self._fixed.items()}
        env.update(x=x[0], y=x[1], z=x[2], _once={})
        out = np.empty((len(self._fields), x.shape[1]))
        with np.errstate(all="ignore"):
            for k, f in enumerate(self._fields):
                out[k] = f(env)
        return out

    def coefficients(self, theta: Mapping[str, float]) -> FloatArray:
        """The monomials ``θ^{e_k}``, one per term."""
        t = np.array([float(theta[n]) for n in self.names], dtype=np.float64)
        return np.array([np.prod(t ** np.array(e)) for e in self.exponents], dtype=np.float64)
