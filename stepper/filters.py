"""`if EXPR` of a probe: parsed once with Python's `ast` and compiled into closures over a
whitelist of node types, never `eval`'d.

EXPR is over the probe's fetch-argument names, `pid`, `tid`, `comm` and, for return probes,
`retval` and `duration_ns`: comparisons (== != < <= > >=, chained), `and`/`or`/`not`,
arithmetic (+ - * / % // and the bitwise & | ^ << >> ~; `/` divides integers, truncating like
C), integer literals (0x.. too) and string literals. A value that is a fault (a bad pointer)
makes any comparison with it false, so the hit is dropped.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Sequence

from .errors import StepperError

__all__ = ["Filter", "FilterError", "parse_filter"]


class FilterError(StepperError):
    """The `if` expression does not parse, or names something a probe does not have."""


def _div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _mod(a: int, b: int) -> int:
    return a - b * _div(a, b)


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: _div, ast.FloorDiv: operator.floordiv, ast.Mod: _mod,
        ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
        ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
        ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_UN = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}


class Filter:
    """A compiled `if` expression: `matches(env)` with env a dict of the names' values."""

    def __init__(self, text: str, names: frozenset[str], fn: Callable[[dict], Any]) -> None:
        self.text = text
        self.names = names   # the names it reads (what a hit must provide)
        self._fn = fn

    def matches(self, env: dict) -> bool:
        try:
            return bool(self._fn(env))
        except (TypeError, ZeroDivisionError, ValueError, OverflowError):
            return False   # a fault (None) or a string in arithmetic: the hit does not match

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def parse_filter(text: str, names: Sequence[str], whole: str | None = None,
                 at: int = 0) -> Filter:
    """Compile `text`; `names` are those it may use. `whole`/`at`: the -p text and where
    `text` starts in it, for the error's column."""
    whole = text if whole is None else whole
    source = text.strip()
    lead = at + len(text) - len(text.lstrip())

    def fail(col: int, why: str) -> FilterError:
        return FilterError(f"probe {whole!r}: filter: {why} (character {lead + col + 1})")

    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        col = (e.offset or 1) - 1 if e.lineno == 1 else len(source)
        raise fail(min(col, len(source)), f"syntax error: {e.msg}") from None
    allowed = set(names)
    used: set[str] = set()

    def build(node: ast.AST) -> Callable[[dict], Any]:
        col = getattr(node, "col_offset", 0)
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(node, ast.UnaryOp):
            inner = build(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda env: not inner(env)
            op = _UN[type(node.op)]
            return lambda env: op(_int(inner(env)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            left, right, op = build(node.left), build(node.right), _BIN[type(node.op)]
            return lambda env: op(_int(left(env)), _int(right(env)))
        if isinstance(node, ast.Compare):
            first = build(node.left)
            rest = [(_CMP[type(o)], build(c)) for o, c in zip(node.ops, node.comparators)
                    if type(o) in _CMP]
            if len(rest) != len(node.ops):
                raise fail(col, "only == != < <= > >= compare")
            return lambda env: _compare(first(env), rest, env)
        if isinstance(node, ast.Name):
            if node.id not in allowed:
                raise fail(col, f"unknown name {node.id!r}: use "
                                f"{', '.join(sorted(allowed))}")
            used.add(node.id)
            key = node.id
            return lambda env: env[key]
        if isinstance(node, ast.Constant) and type(node.value) in (int, str):
            value = node.value
            return lambda env: value
        raise fail(col, f"{type(node).__name__.lower()} is not allowed in a filter: "
                        "names, numbers, strings, comparisons, and/or/not, arithmetic")

    fn = build(tree.body)
    return Filter(source, frozenset(used), fn)


def _int(value: Any) -> int:
    if type(value) is not int:   # a string or a fault in arithmetic
        raise TypeError(value)
    return value


def _compare(left: Any, rest: list, env: dict) -> bool:
    for op, get in rest:
        right = get(env)
        if left is None or right is None or type(left) is not type(right):
            return False
        if not op(left, right):
            return False
        left = right
    return True
