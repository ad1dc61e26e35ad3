"""The `const-fold` pass: evaluate parameter-free ops whose inputs are all constants.

A `const` node is a tensor filled with one number, shaped like its input, so folding an
op of constants computes one float (in float64) and gives a `const` with the same shape
source. Folded: pointwise activations, binary add/sub/mul, scale, and norms without
affine parameters (layer norm of a constant row is 0; RMS norm is c / sqrt(c^2 + eps)).
Values that are not finite are left unfolded, so an overflow stays a run-time fact.

The canonicalization table runs in the same fixed point (with training=true, so
dropout stays): a fold often exposes an identity, e.g. `x + (c - c)` becomes `x + 0`
and then `x`, or `x * (2 + 3)` becomes `scale{5}(x)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph, Node
from archc.ir.types import Attrs
from archc.passes.base import PassResult
from archc.passes.canonicalize import canonical_patterns
from archc.passes.pipeline import register_pass
from archc.passes.rewrite import Pattern, apply_patterns, const_value, input_node, on_copy


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _gelu_tanh(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# The same functions as the torch lowering (F.gelu, F.gelu(approximate='tanh'), ...).
FNS: dict[str, Callable[[float], float]] = {
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "gelu_tanh": _gelu_tanh,
    "relu": lambda x: max(x, 0.0),
    "silu": lambda x: x * _sigmoid(x),
    "tanh": math.tanh,
    "sigmoid": _sigmoid,
    "identity": lambda x: x,
}
BINARY: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
}


def _const(n: Node, value: float, shape_src: Node) -> Node | None:
    """`n` turned into a const of `value` shaped by `shape_src`'s input (a const's)."""
    if not math.isfinite(value):
        return None
    return replace(n, op="const", attrs=Attrs(value=value), inputs=shape_src.inputs, params=())


def _pointwise(g: Graph, n: Node) -> Node | None:
    c = const_value(g, n.inputs[0])
    if c is None:
        return None
    try:
        value = FNS[n.attrs["fn"]](c)
    except OverflowError:
        return None
    return _const(n, value, input_node(g, n))


def _binary(g: Graph, n: Node) -> Node | None:
    a, b = (const_value(g, v) for v in n.inputs)
    if a is None or b is None:
        return None
    return _const(n, BINARY[n.attrs["fn"]](a, b), input_node(g, n))


def _scale(g: Graph, n: Node) -> Node | None:
    c = const_value(g, n.inputs[0])
    if c is None:
        return None
    return _const(n, c * float(n.attrs["factor"]), input_node(g, n))


def _norm(g: Graph, n: Node) -> Node | None:
    c = const_value(g, n.inputs[0])
    if c is None or n.attrs["affine"]:
        return None
    eps = float(n.attrs["eps"])
    value = 0.0 if n.attrs["kind"] == "layer" else c / math.sqrt(c * c + eps)
    return _const(n, value, input_node(g, n))


FOLD_PATTERNS = [
    Pattern("fold-pointwise", "pointwise", _pointwise),
    Pattern("fold-binary", "binary", _binary),
    Pattern("fold-scale", "scale", _scale),
    Pattern("fold-norm", "norm", _norm),
]


@register_pass
@dataclass(frozen=True)
class ConstFold:
    """Fold operations on constants (and the identities they expose) to a fixed point,
    regions included."""

    name: ClassVar[str] = "const-fold"

    def run(self, graph: Graph) -> PassResult:
        patterns = [*FOLD_PATTERNS, *canonical_patterns(training=True)]
        return on_copy(graph, lambda g, parent: apply_patterns(g, patterns))
