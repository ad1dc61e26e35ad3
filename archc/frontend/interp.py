"""`${...}` references to spec values with simple arithmetic, evaluated without exec.

An expression is parsed with Python's `ast` in eval mode and walked over a whitelist:
numbers, names (`d_model`, `vars` entries, dotted paths such as `train.seq_len`),
+ - * / // % **, unary minus, parentheses, and min/max/int/round calls. Anything
else is an error; nothing is ever executed.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

_REF = re.compile(r"\$\{([^{}]*)\}")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "int": int, "round": round}


class InterpError(ValueError):
    """A `${...}` expression that cannot be evaluated; the message says why."""


def has_reference(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def evaluate(expr: str, lookup: Callable[[str], Any]) -> Any:
    """Value of one expression; `lookup(name)` returns a referenced value."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise InterpError(f"cannot parse expression '{expr}'") from exc

    def walk(node: ast.AST) -> Any:
        value = _walk(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise InterpError(f"'{ast.unparse(node)}' is not a finite number")
        return value

    def _walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        name = _dotted(node)
        if name is not None:
            return lookup(name)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = walk(node.left), walk(node.right)
            for side in (left, right):
                if isinstance(side, bool) or not isinstance(side, (int, float)):
                    raise InterpError(f"arithmetic needs numbers, got {side!r}")
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise InterpError("exponent too large")
            try:
                return _BINOPS[type(node.op)](left, right)
            except ZeroDivisionError as exc:
                raise InterpError("division by zero") from exc
            except OverflowError as exc:
                raise InterpError(f"'{ast.unparse(node)}' overflows") from exc
            except TypeError as exc:
                raise InterpError(f"cannot compute {ast.unparse(node)}: {exc}") from exc
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            if not isinstance(value, (int, float)):
                raise InterpError(f"cannot negate {value!r}")
            return -value if isinstance(node.op, ast.USub) else value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            args = [walk(a) for a in node.args]
            try:
                return _FUNCS[node.func.id](*args)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InterpError(f"{node.func.id}(): {exc}") from exc
        raise InterpError(
            f"'{ast.unparse(node)}' is not allowed in ${{...}} "
            "(only numbers, names and + - * / // % **)"
        )

    result = walk(tree)
    if isinstance(result, (int, float)) and abs(result) > 1e18:
        raise InterpError(f"the value of '{expr}' is too large")
    return result


def interpolate(text: str, lookup: Callable[[str], Any]) -> Any:
    """`"${a * 2}"` -> the typed value; `"w${a}"` -> a string with the value spliced in."""
    whole = _REF.fullmatch(text.strip())
    if whole:
        return evaluate(whole.group(1), lookup)
    if "${" in text and not _REF.search(text):
        raise InterpError("unterminated '${' in string")
    return _REF.sub(lambda m: str(evaluate(m.group(1), lookup)), text)
