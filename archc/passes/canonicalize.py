"""The `canonicalize` pass: fold identities, chains and inverse pairs to a fixed point.

The table (each a `Pattern` of rewrite.py):

- pointwise{fn=identity}(x) -> x; split with one part -> x
- dropout{p=0}(x) -> x; with option training=false every dropout -> x (eval only)
- x + 0, 0 + x, x - 0, x * 1, 1 * x -> x (0 and 1 as `const` nodes)
- x * const c, const c * x -> scale{factor=c}(x)
- scale{1}(x) -> x; scale{b}(scale{a}(x)) -> scale{a*b}(x)
- reshape to the input's own shape -> x; reshape(reshape(x)) -> one reshape
- rearrange by the identity -> x; rearrange{q}(rearrange{p}(x)) -> rearrange{p∘q}(x),
  so an inverse pair becomes the identity and then disappears
- const(const(x)) -> const(x): a constant needs only its shape source

A fired rewrite keeps the replaced node's `loc` and `path`; nodes left unused and
parameter-free are erased (parameters are dce's business).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph, Node, Value
from archc.ir.types import Attrs
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass
from archc.passes.rewrite import (
    Pattern,
    RewriteFn,
    apply_patterns,
    const_value,
    input_node,
    on_copy,
)


def _identity_pointwise(g: Graph, n: Node) -> Value | None:
    return n.inputs[0] if n.attrs["fn"] == "identity" else None


def _single_split(g: Graph, n: Node) -> Value | None:
    return n.inputs[0] if len(n.attrs["sizes"]) == 1 else None


def _dropout(training: bool) -> RewriteFn:
    def rewrite(g: Graph, n: Node) -> Value | None:
        return n.inputs[0] if float(n.attrs["p"]) == 0.0 or not training else None

    return rewrite


def _binary(g: Graph, n: Node) -> Value | Node | None:
    a, b = n.inputs
    ca, cb = const_value(g, a), const_value(g, b)
    fn = n.attrs["fn"]
    if fn == "add":
        if cb == 0.0:
            return a
        if ca == 0.0:
            return b
    elif fn == "sub":
        if cb == 0.0:
            return a
    elif fn == "mul":
        if cb == 1.0:
            return a
        if ca == 1.0:
            return b
        # The constant becomes an attribute: one input fewer, and scale chains fold.
        if cb is not None:
            return replace(n, op="scale", attrs=Attrs(factor=cb), inputs=(a,))
        if ca is not None:
            return replace(n, op="scale", attrs=Attrs(factor=ca), inputs=(b,))
    return None


def _scale(g: Graph, n: Node) -> Value | Node | None:
    if float(n.attrs["factor"]) == 1.0:
        return n.inputs[0]
    inner = input_node(g, n)
    if inner.op == "scale":
        factor = float(inner.attrs["factor"]) * float(n.attrs["factor"])
        return replace(n, attrs=Attrs(factor=factor), inputs=inner.inputs)
    return None


def _reshape(g: Graph, n: Node) -> Value | Node | None:
    if g.type_of(n.inputs[0]) == n.outputs[0]:
        return n.inputs[0]
    inner = input_node(g, n)
    if inner.op == "reshape":
        return replace(n, inputs=inner.inputs)
    return None


def _rearrange(g: Graph, n: Node) -> Value | Node | None:
    perm = n.attrs["perm"]
    if perm == tuple(range(len(perm))):
        return n.inputs[0]
    inner = input_node(g, n)
    if inner.op == "rearrange":
        # inner: axis i of y is axis p[i] of x; outer: axis j of z is axis q[j] of y.
        p = inner.attrs["perm"]
        return replace(n, attrs=Attrs(perm=tuple(p[j] for j in perm)), inputs=inner.inputs)
    return None


def _const(g: Graph, n: Node) -> Node | None:
    inner = input_node(g, n)
    return replace(n, inputs=inner.inputs) if inner.op == "const" else None


def canonical_patterns(training: bool = True) -> list[Pattern]:
    """The canonicalization table; `training` False also folds dropout with p > 0."""
    return [
        Pattern("pointwise-identity", "pointwise", _identity_pointwise),
        Pattern("split-single", "split", _single_split),
        Pattern("dropout-noop", "dropout", _dropout(training)),
        Pattern("binary-identity", "binary", _binary),
        Pattern("scale-fold", "scale", _scale),
        Pattern("reshape-fold", "reshape", _reshape),
        Pattern("rearrange-fold", "rearrange", _rearrange),
        Pattern("const-shape", "const", _const),
    ]


@register_pass
@dataclass(frozen=True)
class Canonicalize:
    """Apply the canonicalization table to a fixed point, regions included.

    training=false (an eval/inference build) also drops dropout with p > 0, which is the
    identity in eval; the default keeps it so -O2 training still regularises.
    """

    name: ClassVar[str] = "canonicalize"
    training: bool = True

    def run(self, graph: Graph) -> PassResult:
        patterns = canonical_patterns(self.training)
        return on_copy(graph, lambda g, parent: apply_patterns(g, patterns))
