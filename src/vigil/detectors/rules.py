"""Rules on fields: a bound on one field, or a boolean expression over several (both usable from YAML).

Rules are stateless point rules: each row is judged on its own values, nothing is learned, every key is
always ready (unless a field the rule reads is missing), and ``fire`` equals ``flag``.

**Expression language** (:class:`ExpressionRule`). A small, safe subset of Python expressions, parsed with
:mod:`ast` and compiled into a tree of numpy operations over the batch's columns (never ``eval``):

* numeric constants (``1000``, ``2.5``, ``1e6``) and field names;
* arithmetic ``+ - * / // % **`` and unary ``-``/``+``;
* comparisons ``< <= > >= == !=`` (chains such as ``0 < x < 10`` too), ``and``, ``or``, ``not``;
* the functions ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``, ``log(x)`` (natural) and ``sqrt(x)``.

Anything else (attribute access, subscripts, calls of other functions, lambdas, strings, names of
functions used as values, keyword arguments...) is rejected when the rule is built, with the offending
construct named. All arithmetic is float64 (so ``10 ** 10 ** 10`` is ``inf``, not a hang); a comparison
gives 1.0 or 0.0; ``and``/``or``/``not`` treat non-zero as true. A row where the expression evaluates to NaN
(e.g. ``log`` of a negative number) does not satisfy the rule.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


def _squash(excess: Float64Array, violated: np.ndarray) -> Float64Array:
    """Calibrate a rule's excess: 0 if the rule holds, else in (0.99, 1] growing with the excess."""
    return np.where(violated, 1.0 - 0.01 * np.exp(-np.where(violated, excess, 0.0)), 0.0)


@register
class ThresholdRule(BaseDetector):
    """Flag a value above ``above`` or below ``below`` (a static bound set by a person).

    Args:
        field: the value to check.
        above: flag when ``x > above`` (``None``: no upper bound).
        below: flag when ``x < below`` (``None``: no lower bound).

    Score:
        how far beyond the bound the value is, **relative to the bound's magnitude**
        (``(x - above) / |above|``; raw distance when the bound is 0), 0 inside the bounds. So 1500 against
        ``above: 1000`` scores 0.5. Calibrated: 0 inside the bounds, else ``1 - 0.01 * exp(-score)``, in
        (0.99, 1]: any violation passes a 0.99 bar (as in an ensemble) and bigger ones rank higher.

    State:
        none. Warm-up: none; a missing (NaN) value is not judged (not ready). ``fire`` equals ``flag``.

    Examples:
        >>> rule = ThresholdRule(field="amount", above=1000, below=0)
        >>> v = rule.process_many(np.zeros(4, np.int32), np.arange(4), {"amount": np.array([50, 1500, -2, np.nan])})
        >>> v.flag.tolist(), v.score.tolist(), v.ready.tolist()
        ([False, True, True, False], [0.0, 0.5, 2.0, 0.0], [True, True, True, False])
    """

    kind: ClassVar[str] = "threshold_rule"
    live_params: ClassVar[frozenset[str]] = frozenset({"above", "below"})
    state_version: ClassVar[int] = 1

    def __init__(self, *, field: str = "value", above: float | None = None, below: float | None = None) -> None:
        if above is None and below is None:
            raise ValueError("give `above`, `below` or both; got neither")
        for name, bound in (("above", above), ("below", below)):
            if bound is not None and (isinstance(bound, bool) or not math.isfinite(float(bound))):
                raise ValueError(f"`{name}` must be a finite number or null; got {bound!r}")
        if above is not None and below is not None and not below <= above:
            raise ValueError(f"`below` must be <= `above`; got below={below!r}, above={above!r}")
        self.field = field
        self.above = None if above is None else float(above)
        self.below = None if below is None else float(below)
        self.fields = (field,)
        self.threshold = 0.0

    def params(self) -> dict[str, Any]:
        return {"field": self.field, "above": self.above, "below": self.below}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"field": "value", "above": 70.0, "below": 10.0}, {"field": "value", "above": 60.0}]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        ready = ~np.isnan(x)
        excess = np.zeros(len(x), np.float64)
        with np.errstate(invalid="ignore"):
            if self.above is not None:
                up = np.where(ready & (x > self.above), x - self.above, 0.0)
                excess = np.maximum(excess, up / (abs(self.above) or 1.0))
            if self.below is not None:
                down = np.where(ready & (x < self.below), self.below - x, 0.0)
                excess = np.maximum(excess, down / (abs(self.below) or 1.0))
        flag = excess > 0.0
        score = np.minimum(excess, np.finfo(np.float64).max)  # +-inf input: finite score
        return Verdicts(score, _squash(score, flag), flag, flag.copy(), ready, {"value": x})

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by its relative excess (negative below the lower bound); expected: that bound."""
        x = v.stats["value"]
        score, bound = np.zeros(len(x)), np.full(len(x), np.nan)
        with np.errstate(invalid="ignore"):
            if self.above is not None:
                up = x > self.above
                score = np.where(up, (x - self.above) / (abs(self.above) or 1.0), score)
                bound = np.where(up, self.above, bound)
            if self.below is not None:
                down = x < self.below
                score = np.where(down, -(self.below - x) / (abs(self.below) or 1.0), score)
                bound = np.where(down, self.below, bound)
        return one_feature(self.field, rows, np.clip(score, -np.finfo(float).max, np.finfo(float).max), x, bound,
                           v.flag)  # fmt: skip

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "amount 1500 is above the limit 1000"."""
        x = float(stats.get("value", np.nan))
        if self.above is not None and x > self.above:
            return f"{self.field} {x:.6g} is above the limit {self.above:g}"
        return f"{self.field} {x:.6g} is below the limit {self.below:g}"

    def reset_slots(self, slots: Int32Array) -> None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return {}

    def _restore(self, state: dict[str, Any]) -> None:
        return None


# ---- the expression language -----------------------------------------------------------------------------

Node = Callable[[dict[str, Float64Array]], Float64Array]

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
    ast.FloorDiv: np.floor_divide, ast.Mod: np.mod, ast.Pow: np.power,
}  # fmt: skip
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}  # fmt: skip
# name -> (numpy function, min args, max args)
_FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (np.abs, 1, 1), "log": (np.log, 1, 1), "sqrt": (np.sqrt, 1, 1),
    "min": (np.minimum, 2, 64), "max": (np.maximum, 2, 64),
}  # fmt: skip
_ALLOWED = ("numbers, field names, + - * / // % **, comparisons, and/or/not, "
            "abs(), min(), max(), log(), sqrt()")  # fmt: skip
_MAX_EXPR_CHARS = 4000


class UnsafeExpression(ValueError):
    """An expression uses a construct outside the rule language."""


def _truth(a: Float64Array) -> np.ndarray:
    return (a != 0.0) & ~np.isnan(a)


def _reject(node: ast.AST, expr: str, why: str = "") -> UnsafeExpression:
    text = ast.get_source_segment(expr, node) or type(node).__name__
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if col is not None else ""
    return UnsafeExpression(
        f"`expr`: {type(node).__name__} `{text}`{where} is not allowed{why}; allowed: {_ALLOWED}; got {expr!r}"
    )


def compile_expression(expr: str) -> tuple[Node, list[str]]:
    """Compile a rule expression into a numpy evaluator and the field names it reads (first use first).

    Raises:
        UnsafeExpression: the expression uses anything outside the language (module docstring).

    Examples:
        >>> fn, names = compile_expression("amount > 1000 and abs(delta) / 100 > 3")
        >>> names, fn({"amount": np.array([2000.0, 2000.0]), "delta": np.array([-500.0, 10.0])}).tolist()
        (['amount', 'delta'], [1.0, 0.0])
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"`expr` must be a non-empty expression string; got {expr!r}")
    if len(expr) > _MAX_EXPR_CHARS:
        raise ValueError(f"`expr` is longer than {_MAX_EXPR_CHARS} characters; got {len(expr)}")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"`expr` is not a valid expression ({exc.msg}); got {expr!r}") from None
    names: list[str] = []
    src = expr.strip()

    def build(node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise _reject(node, src, " (only numeric constants)")
            c = float(node.value)
            return lambda cols: np.float64(c)  # type: ignore[return-value]
        if isinstance(node, ast.Name):
            if node.id in _FUNCS:
                raise _reject(node, src, f" (`{node.id}` is a function: call it)")
            if node.id not in names:
                names.append(node.id)
            name = node.id
            return lambda cols: cols[name]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            op, left, right = _BINOPS[type(node.op)], build(node.left), build(node.right)
            return lambda cols: op(left(cols), right(cols))
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            if isinstance(node.op, ast.USub):
                return lambda cols: np.negative(operand(cols))
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(node.op, ast.Not):
                return lambda cols: (~_truth(operand(cols))).astype(np.float64)
            raise _reject(node, src)
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

            def boolop(cols: dict[str, Float64Array]) -> Float64Array:
                acc = _truth(parts[0](cols))
                for p in parts[1:]:
                    acc = combine(acc, _truth(p(cols)))
                return np.asarray(acc, np.float64)

            return boolop
        if isinstance(node, ast.Compare):
            if not all(type(o) in _CMPOPS for o in node.ops):
                raise _reject(node, src, " (comparisons are < <= > >= == !=)")
            terms = [build(node.left), *(build(c) for c in node.comparators)]
            ops = [_CMPOPS[type(o)] for o in node.ops]

            def compare(cols: dict[str, Float64Array]) -> Float64Array:
                vals = [t(cols) for t in terms]
                acc = ops[0](vals[0], vals[1])
                for k in range(1, len(ops)):
                    acc = np.logical_and(acc, ops[k](vals[k], vals[k + 1]))
                return np.asarray(acc, np.float64)

            return compare
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
                raise _reject(node, src, " (the only functions are abs, min, max, log, sqrt)")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _reject(node, src, " (positional arguments only)")
            fn, lo, hi = _FUNCS[node.func.id]
            if not lo <= len(node.args) <= hi:
                raise _reject(node, src, f" ({node.func.id}() takes {lo}{'' if lo == hi else '+'} argument(s))")
            args = [build(a) for a in node.args]
            if len(args) == 1:
                arg = args[0]
                return lambda cols: fn(arg(cols))

            def reduce(cols: dict[str, Float64Array]) -> Float64Array:
                acc = args[0](cols)
                for a in args[1:]:
                    acc = fn(acc, a(cols))
                return acc  # type: ignore[no-any-return]

            return reduce
        raise _reject(node, src)

    body = build(tree.body)

    def run(cols: dict[str, Float64Array]) -> Float64Array:
        n = len(next(iter(cols.values()))) if cols else 1
        with np.errstate(all="ignore"):
            out = np.asarray(body(cols), np.float64)
        return np.broadcast_to(out, (n,)).copy() if out.shape != (n,) else out

    return run, names


@register
class ExpressionRule(BaseDetector):
    """Flag rows where a boolean expression over fields holds, e.g. ``amount > 1000 and amount / 100 > 3``.

    Args:
        expr: the expression (the safe language of the module docstring); rejected at construction if it uses
            anything else.
        fields: the fields the rule reads; default: the names in ``expr``. Given, they must include every name
            in ``expr``.

    Score:
        1.0 when the rule holds, else 0.0; calibrated the same; ``flag`` = holds. ``self.threshold`` is 0.5.

    State:
        none. Warm-up: none; a row with any of ``fields`` missing (NaN) is not evaluated (not ready).
        ``fire`` equals ``flag``.

    Examples:
        >>> rule = ExpressionRule(expr="amount > 1000 and amount / 100 > 3")
        >>> v = rule.process_many(np.zeros(3, np.int32), np.arange(3), {"amount": np.array([200, 5000, np.nan])})
        >>> v.flag.tolist(), v.ready.tolist(), rule.fields
        ([False, True, False], [True, True, False], ('amount',))
        >>> ExpressionRule(expr="__import__('os').system('x')")
        Traceback (most recent call last):
        ...
        vigil.detectors.rules.UnsafeExpression: `expr`: Call `__import__('os').system('x')` at column 1 is not ...
    """

    kind: ClassVar[str] = "expression_rule"
    state_version: ClassVar[int] = 1

    def __init__(self, *, expr: str, fields: list[str] | None = None) -> None:
        self._eval, names = compile_expression(expr)
        if fields is not None:
            given = [fields] if isinstance(fields, str) else list(fields)
            unknown = [n for n in names if n not in given]
            if unknown:
                raise ValueError(f"`fields` must include every name in `expr`; missing {unknown}; got {given!r}")
            self.fields = tuple(given)
        else:
            self.fields = tuple(names)
        self.expr = expr
        self._fields_param = None if fields is None else list(self.fields)
        self.threshold = 0.5

    def params(self) -> dict[str, Any]:
        return {"expr": self.expr, "fields": self._fields_param}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"expr": "value > 70 or value < 10"}, {"expr": "abs(log(value) - log(30)) > 0.9 and value >= 0"}]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        cols = {f: np.asarray(X[f], np.float64) for f in self.fields}
        ready = np.ones(m, np.bool_)
        for c in cols.values():
            ready &= ~np.isnan(c)
        holds = _truth(self._eval(cols)) if cols else np.broadcast_to(_truth(self._eval({})), (m,)).copy()
        flag = ready & holds
        score = flag.astype(np.float64)
        return Verdicts(score, score.copy(), flag, flag.copy(), ready, {f: c for f, c in cols.items()})

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "rule `amount > 1000` holds (amount=1500)"."""
        vals = ", ".join(f"{f}={float(stats.get(f, np.nan)):.6g}" for f in self.fields)
        return f"rule `{self.expr}` holds ({vals})"

    def reset_slots(self, slots: Int32Array) -> None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return {}

    def _restore(self, state: dict[str, Any]) -> None:
        return None
