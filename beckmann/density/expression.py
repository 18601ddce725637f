"""The safe expression language of ``kind = "expression"`` densities.

A formula in ``x, y, z``, the constants ``pi, e`` and named parameters is read by a small safe
parser (:class:`Expression`): Python's :mod:`ast` builds the tree, only a whitelist of nodes is
accepted, and the tree is compiled once into vectorised NumPy closures. User text is never passed
to :func:`eval` or :func:`compile`. Not collective.
"""

from __future__ import annotations

import ast
import functools
import keyword
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.density.validate import real_number

__all__ = [
    "CONSTANTS",
    "COORDINATES",
    "FUNCTIONS",
    "Expression",
    "MissingParameterError",
    "PolynomialForm",
    "check_params",
]

FloatArray = npt.NDArray[np.float64]

#: Coordinate names of an expression; ``z`` is zero in 2D.
COORDINATES = ("x", "y", "z")

#: Named constants of an expression.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_UNARY: dict[str, Callable[..., Any]] = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
}
_BINARY: dict[str, Callable[..., Any]] = {"atan2": np.arctan2}
_VARIADIC: dict[str, Callable[..., Any]] = {"min": np.minimum, "max": np.maximum}

#: Functions an expression may call: one argument each, except ``atan2(y, x)`` (two) and
#: ``min`` / ``max`` (two or more, elementwise).
FUNCTIONS = tuple(sorted([*_UNARY, *_BINARY, *_VARIADIC]))

_OPERATORS: dict[type[ast.operator], Callable[..., Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}

_MAX_EXPRESSION_LENGTH = 10_000
_MAX_EXPRESSION_DEPTH = 400
# Operators that chain left to right without nesting (a + b - c, a * b / c).
_CHAIN_GROUP = {ast.Add: "sum", ast.Sub: "sum", ast.Mult: "product", ast.Div: "product"}

_Node = Callable[[Mapping[str, Any]], Any]


def check_params(params: Any, what: str) -> dict[str, float]:
    """Validate a name -> number mapping of expression parameters."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} must be a mapping of names to numbers, got {params!r}")
    reserved = {*COORDINATES, *CONSTANTS, *FUNCTIONS}
    checked: dict[str, float] = {}
    for name, value in params.items():
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
            or name.startswith("_")
        ):
            raise ValueError(
                f"parameter name {name!r} in {what} is not allowed: use a plain identifier "
                "not starting with '_'"
            )
        if name in reserved:
            raise ValueError(
                f"parameter name {name!r} in {what} clashes with a coordinate, constant or "
                "function of the expression language"
            )
        checked[name] = real_number(value, f"parameter {name!r} in {what}")
    return checked


class MissingParameterError(ValueError):
    """An expression uses a name that is neither a coordinate, a constant nor a given parameter.

    Attributes:
        names: The names without a value.
    """

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


class Expression:
    """A safe, vectorised arithmetic expression in ``x, y, z``, constants and parameters.

    Grammar (Python syntax, whitelisted): real number literals; the names ``x, y, z``
    (coordinates), ``pi, e`` (constants), and any other plain identifier, which is a *parameter*
    and must get a value when the expression is evaluated; binary ``+ - * / **``; unary ``+ -``;
    calls of the functions in :data:`FUNCTIONS`. Precedence is Python's: ``-x**2 == -(x**2)``,
    ``2**3**2 == 2**9``. Everything else (attributes, subscripts, lambdas, comprehensions,
    comparisons, keyword arguments, strings, ...) is rejected. The syntax tree is compiled once
    into nested NumPy closures; user text is never evaluated by Python.

    Arithmetic follows IEEE rules without warnings: ``log(0)`` gives ``-inf``, ``sqrt(-1)`` gives
    ``nan``; :func:`check_values` reports such values.

    Args:
        text: The expression.

    Raises:
        ValueError: The text does not parse, or uses a construct, function or name that is not
            allowed.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"expression must be a string, got {text!r}")
        self.text = text
        if not text.strip():
            raise ValueError(f"malformed expression {text!r}: it is empty")
        if len(text) > _MAX_EXPRESSION_LENGTH:
            raise ValueError(
                f"malformed expression {self._quoted}: longer than "
                f"{_MAX_EXPRESSION_LENGTH} characters"
            )
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            where = f" (column {err.offset})" if err.offset else ""
            raise ValueError(f"malformed expression {self._quoted}: {err.msg}{where}") from err
        except (RecursionError, MemoryError) as err:
            raise ValueError(f"malformed expression {self._quoted}: nested too deeply") from err
        names: set[str] = set()
        self._body = tree.body
        try:
            self._root = self._compile(tree.body, names)
        except RecursionError as err:
            raise ValueError(f"malformed expression {self._quoted}: nested too deeply") from err
        #: Free names other than coordinates and constants: the parameters it needs.
        self.parameter_names: frozenset[str] = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    @property
    def _quoted(self) -> str:
        """The text for messages, shortened when long."""
        text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return repr(text)

    def _error(self, node: ast.AST, reason: str) -> ValueError:
        segment = ast.get_source_segment(self.text.strip(), node)
        if segment and len(segment) > 60:
            segment = segment[:57] + "..."
        at = f" in {segment!r}" if segment and segment != self.text.strip() else ""
        return ValueError(f"malformed expression {self._quoted}: {reason}{at}")

    def _compile(self, node: ast.AST, names: set[str], depth: int = 0) -> _Node:
        # The closures recurse as deep as the tree: bound it well below Python's stack limit.
        if depth > _MAX_EXPRESSION_DEPTH:
            raise self._error(node, f"nested more than {_MAX_EXPRESSION_DEPTH} levels deep")
        depth += 1
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._error(node, f"constant {value!r} is not a real number")
            try:
                const = np.float64(float(value))
            except OverflowError as err:
                raise self._error(node, "a number literal is too large") from err
            return lambda env: const
        if isinstance(node, ast.Name):
            return self._compile_name(node, names)
        if isinstance(node, ast.UnaryOp):
            operand = self._compile(node.operand, names, depth)
            if isinstance(node.op, ast.USub):
                return lambda env: np.negative(operand(env))
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self._error(node, f"unary operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            op = _OPERATORS.get(type(node.op))
            if op is None:
                hint = "; use ** for powers" if isinstance(node.op, ast.BitXor) else ""
                raise self._error(
                    node,
                    f"operator {type(node.op).__name__} is not allowed (only + - * / **){hint}",
                )
            return self._compile_chain(node, names, depth)
        if isinstance(node, ast.Call):
            return self._compile_call(node, names, depth)
        raise self._error(node, f"{type(node).__name__} is not allowed")

    def _compile_chain(self, node: ast.BinOp, names: set[str], depth: int) -> _Node:
        """A left-leaning chain ``a + b - c + ...`` (or ``a * b / c ...``) as one flat node.

        A flat sum of many terms is a long chain, not deep nesting: it is evaluated in a loop,
        so only real nesting counts against the depth limit.
        """
        group = _CHAIN_GROUP.get(type(node.op))
        ops: list[Callable[[Any, Any], Any]] = []
        operands: list[ast.AST] = []
        cur: ast.AST = node
        while (
            isinstance(cur, ast.BinOp)
            and group is not None
            and _CHAIN_GROUP.get(type(cur.op)) == group
        ):
            ops.append(_OPERATORS[type(cur.op)])
            operands.append(cur.right)
            cur = cur.left
        if not ops:  # ** (right-associative) or a lone operator
            left = self._compile(node.left, names, depth)
            right = self._compile(node.right, names, depth)
            op = _OPERATORS[type(node.op)]
            return lambda env: op(left(env), right(env))
        operands.append(cur)
        ops.reverse()
        operands.reverse()
        first, *rest = [self._compile(o, names, depth) for o in operands]
        steps = list(zip(ops, rest, strict=True))

        def chain(env: Any) -> Any:
            acc = first(env)
            for op, f in steps:
                acc = op(acc, f(env))
            return acc

        return chain

    def _compile_name(self, node: ast.Name, names: set[str]) -> _Node:
        name = node.id
        if name in FUNCTIONS:
            raise self._error(node, f"function {name!r} must be called, as {name}(...)")
        if name.startswith("_"):
            raise self._error(
                node,
                f"unknown name {name!r}: allowed are the coordinates x, y, z, the constants "
                "pi, e, and parameter names not starting with '_'",
            )
        if name in CONSTANTS:
            const = np.float64(CONSTANTS[name])
            return lambda env: const
        if name not in COORDINATES:
            names.add(name)
        return lambda env: env[name]

    def _compile_call(self, node: ast.Call, names: set[str], depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise self._error(
                node.func, f"{type(node.func).__name__} is not allowed; only named functions"
            )
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise self._error(
                node, f"unknown function {fname!r}; allowed functions: {', '.join(FUNCTIONS)}"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self._error(node, f"{fname}() takes positional arguments only")
        args = [self._compile(a, names, depth) for a in node.args]
        nargs = len(args)
        if fname in _UNARY:
            if nargs != 1:
                raise self._error(node, f"{fname}() takes 1 argument, got {nargs}")
            f1, (a0,) = _UNARY[fname], args
            return lambda env: f1(a0(env))
        if fname in _BINARY:
            if nargs != 2:
                raise self._error(node, f"{fname}() takes 2 arguments, got {nargs}")
            f2, (b0, b1) = _BINARY[fname], args
            return lambda env: f2(b0(env), b1(env))
        if nargs < 2:
            raise self._error(node, f"{fname}() takes at least 2 arguments, got {nargs}")
        fv = _VARIADIC[fname]
        return lambda env: functools.reduce(fv, (a(env) for a in args))

    def evaluate(self, x: FloatArray, params: Mapping[str, float] | None = None) -> FloatArray:
        """Evaluate at points.

        Args:
            x: Points, shape ``(3, N)`` (rows x, y, z).
            params: Values of the parameters; each name in :attr:`parameter_names` needs one.

        Returns:
            The values, shape ``(N,)``, float64 (constants are broadcast).

        Raises:
            MissingParameterError: A parameter has no value (a ``ValueError``).
        """
        params = {} if params is None else params
        missing = sorted(self.parameter_names - params.keys())
        if missing:
            given = ", ".join(sorted(params)) or "none"
            raise MissingParameterError(
                f"expression {self._quoted} uses {', '.join(map(repr, missing))}, which "
                f"{'has' if len(missing) == 1 else 'have'} no value: allowed names are the "
                f"coordinates x, y, z, the constants pi, e, and parameters given in params "
                f"(given: {given})",
                missing,
            )
        env: dict[str, Any] = {name: np.float64(params[name]) for name in self.parameter_names}
        env.update(x=x[0], y=x[1], z=x[2])
        with np.errstate(all="ignore"):
            values = self._root(env)
        return np.array(np.broadcast_to(values, (x.shape[1],)), dtype=np.float64)

    def polynomial(
        self,
        names: list[str] | tuple[str, ...],
        params: Mapping[str, float] | None = None,
        *,
        max_terms: int = 8,
    ) -> PolynomialForm | None:
        """The expression as a polynomial in the parameters ``names``, when it is one.

        ``f(x; θ) = Σ_k θ^{e_k} f_k(x)`` exactly (as real functions: the floating-point sums are
        regrouped, so values agree with :meth:`evaluate` to round-off), found on the syntax
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
        missing = self.parameter_names - set(sweep) - fixed.keys()
        if missing:
            return None
        try:
            terms = _poly(self, self._body, sweep, max_terms)
        except (_NotPolynomial, RecursionError):
            return None
        return PolynomialForm(sweep, fixed, terms)


    def bind(
        self,
        x: FloatArray,
        names: list[str] | tuple[str, ...],
        params: Mapping[str, float] | None = None,
        *,
        max_bytes: int = 1 << 28,
    ) -> Callable[[Mapping[str, float]], FloatArray] | None:
        """The expression at fixed points ``x`` ``(3, N)`` as a function of ``names``.

        Every largest sub-tree free of ``names`` is evaluated once, here; the returned function
        evaluates only the rest (the θ-dependent arithmetic) for the values of ``names`` it is
        given. ``params`` gives the other parameters. Same values as :meth:`evaluate` (the same
        operations in the same order).

        Returns:
            ``values(theta) -> (N,)``, or ``None`` when the cached arrays would take more than
            ``max_bytes``, or when a parameter has no value.
        """
        sweep = tuple(names)
        fixed = dict(params or {})
        if self.parameter_names - set(sweep) - fixed.keys():
            return None
        env: dict[str, Any] = {k: np.float64(v) for k, v in fixed.items()}
        env.update(x=x[0], y=x[1], z=x[2])
        budget = [max_bytes]
        try:
            with np.errstate(all="ignore"):
                root = _bound(self, self._body, sweep, env, budget)
        except (MemoryError, RecursionError):
            return None
        if budget[0] < 0:
            return None
        n = x.shape[1]

        def values(theta: Mapping[str, float]) -> FloatArray:
            env_t = {k: np.float64(theta[k]) for k in sweep}
            with np.errstate(all="ignore"):
                out = root(env_t)
            return np.array(np.broadcast_to(out, (n,)), dtype=np.float64)

        return values


def _bound(
    expr: Expression, node: ast.AST, names: tuple[str, ...], env: dict[str, Any], budget: list[int]
) -> _Node:
    """``node`` with its largest ``names``-free sub-trees evaluated at ``env`` (module use)."""
    if not _uses(node, names):
        value = expr._compile(node, set())(env)
        budget[0] -= int(getattr(value, "nbytes", 0))
        if budget[0] < 0:
            raise MemoryError
        return lambda env_t: value
    if isinstance(node, ast.Name):
        name = node.id
        return lambda env_t: env_t[name]
    if isinstance(node, ast.UnaryOp):
        inner = _bound(expr, node.operand, names, env, budget)
        if isinstance(node.op, ast.USub):
            return lambda env_t: np.negative(inner(env_t))
        return inner
    if isinstance(node, ast.BinOp):
        left = _bound(expr, node.left, names, env, budget)
        right = _bound(expr, node.right, names, env, budget)
        op = _OPERATORS[type(node.op)]
        return lambda env_t: op(left(env_t), right(env_t))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    args = [_bound(expr, a, names, env, budget) for a in node.args]
    fname = node.func.id
    if fname in _UNARY:
        f1, a0 = _UNARY[fname], args[0]
        return lambda env_t: f1(a0(env_t))
    if fname in _BINARY:
        f2, b0, b1 = _BINARY[fname], args[0], args[1]
        return lambda env_t: f2(b0(env_t), b1(env_t))
    fv = _VARIADIC[fname]
    return lambda env_t: functools.reduce(fv, (a(env_t) for a in args))


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
        return {zero: _once(expr._compile(node, set()))}
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
            den = expr._compile(node.right, set())
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
