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

#: The NumPy operation of each function (operators: :func:`binary_operation`), for
#: :mod:`beckmann.density.parametric`.
UNARY, BINARY, VARIADIC = _UNARY, _BINARY, _VARIADIC



def _square(a: Any, _two: Any) -> Any:
    return np.square(a)


def binary_operation(node: ast.BinOp) -> Callable[[Any, Any], Any]:
    """The NumPy operation of a binary node, ``op(left, right)``.

    ``a ** 2`` with the literal 2 (or 2.0) is ``np.square``: the correctly rounded x*x, several
    times faster than ``np.power``. :mod:`beckmann.density.parametric` evaluates with the same
    operations, so its values stay those of :meth:`Expression.evaluate`.
    """
    r = node.right
    if (
        isinstance(node.op, ast.Pow)
        and isinstance(r, ast.Constant)
        and type(r.value) in (int, float)
        and r.value == 2
    ):
        return _square
    return _OPERATORS[type(node.op)]


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
        #: The syntax tree (:mod:`beckmann.density.parametric` reads it).
        self.tree = tree.body
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

    def compile_node(self, node: ast.AST) -> _Node:
        """A sub-tree of :attr:`tree` compiled as the whole expression is (a closure of env)."""
        return self._compile(node, set())

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
            op = binary_operation(node)
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
