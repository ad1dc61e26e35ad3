"""Random small well-typed graphs for the pass property tests (hypothesis strategies).

A graph reads features (B, T, 8) and mixes linear, norm, pointwise, binary, dropout,
split, const/scale, reshape/rearrange chains (inverse pairs included), duplicated
parameter-free sub-expressions, dead branches and optionally a loop whose body region
is itself such a mix: every pattern the rewrite passes look for shows up.

`Maker` is also the hand builder of the unit and golden tests: `add` infers the output
types and parameters from the op table, as the IR builder does, and names each node
with a unique path.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from archc.diagnostics import SourceLoc
from archc.ir.graph import Graph, Value
from archc.ir.ops import get_op
from archc.ir.types import TensorType

D = 8
FNS = ("gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid", "identity")


class Maker:
    """Build a graph node by node, types and params from the op table."""

    def __init__(self, name: str = "g", width: int = D, prefix: str = "") -> None:
        self.graph = Graph(name)
        self.prefix = prefix
        self._ids = itertools.count()
        t = TensorType(("B", "T", width), "f32")
        node = self.graph.add(
            "input", {"kind": "features", "dim": width}, (), (t,), path=f"{prefix}input"
        )
        self.graph.inputs = [node.id]
        self.x = node.out()

    def add(self, op: str, attrs: dict[str, Any], *ins: Value, regions: tuple = ()) -> Value:
        opdef = get_op(op)
        full = opdef.with_defaults(attrs)
        types = [self.graph.type_of(v) for v in ins]
        outs = opdef.shape(full, types)
        params = opdef.params(full, types)
        i = next(self._ids)
        path = f"{self.prefix}n{i}.{op}"
        # A distinct source location per node, so tests can check rewrites keep it.
        loc = SourceLoc(f"{self.graph.name}.gen", i + 1, 1)
        node = self.graph.add(op, full, ins, outs, params, loc=loc, path=path, regions=regions)
        return node.out()

    def out(self, i: int, v: Value) -> Value:
        return Value(v.node, i)

    def finish(self, *outputs: Value) -> Graph:
        self.graph.outputs = list(outputs)
        return self.graph

    def width(self, v: Value) -> int:
        t = self.graph.type_of(v)
        assert isinstance(t, TensorType)
        return t.feature


def _shuffle_chain(draw: st.DrawFn, m: Maker, x: Value) -> Value:
    """reshape -> rearranges (often an inverse pair) -> reshape back: the identity or
    a feature permutation, as a chain the canonicalizer folds."""
    # Mostly three axes: permutations of two axes commute, so only three tell a wrong
    # composition order from the right one.
    shape = draw(st.sampled_from([(2, 4), (4, 2), (2, 2, 2), (2, 2, 2)]))
    if draw(st.booleans()):  # a reshape chain: (2, 2, 2) then `shape`
        x = m.add("reshape", {"shape": (2, 2, 2)}, x)
    y = m.add("reshape", {"shape": shape}, x)
    perms = list(itertools.permutations(range(len(shape))))
    p = draw(st.sampled_from(perms))
    y = m.add("rearrange", {"perm": p}, y)
    if draw(st.booleans()):  # the inverse: the pair cancels
        inv = tuple(sorted(range(len(p)), key=lambda i: p[i]))
        y = m.add("rearrange", {"perm": inv}, y)
    else:
        y = m.add("rearrange", {"perm": draw(st.sampled_from(perms))}, y)
    return m.add("reshape", {"shape": (D,)}, y)


def _step(draw: st.DrawFn, m: Maker, pool: list[Value]) -> None:
    """Append one random computation on values of `pool` (all (B, T, D)) to the pool."""
    pick = lambda: draw(st.sampled_from(pool))  # noqa: E731
    kind = draw(
        st.sampled_from(
            [
                "linear",
                "norm",
                "pointwise",
                "binary",
                "dropout",
                "split",
                "const",
                "scale",
                "shuffle",
                "duplicate",
            ]
        )
    )
    x = pick()
    if kind == "linear":
        v = m.add("linear", {"out": D, "bias": draw(st.booleans())}, x)
    elif kind == "norm":
        attrs = {"kind": draw(st.sampled_from(["rms", "layer"])), "affine": draw(st.booleans())}
        v = m.add("norm", attrs, x)
    elif kind == "pointwise":
        v = m.add("pointwise", {"fn": draw(st.sampled_from(FNS))}, x)
    elif kind == "binary":
        v = m.add("binary", {"fn": draw(st.sampled_from(["add", "mul", "sub"]))}, x, pick())
    elif kind == "dropout":  # p > 0 too: every model is compared in eval
        v = m.add("dropout", {"p": draw(st.sampled_from([0.0, 0.0, 0.25]))}, x)
    elif kind == "split":
        # Not sizes=(D,): the torch lowering of a one-part split returns a tuple.
        parts = m.add("split", {"sizes": draw(st.sampled_from([(4, 4), (2, 6)]))}, x)
        # Back to width D through a linear: split halves need a way home.
        v = m.add("linear", {"out": D, "bias": False}, m.out(0, parts))
    elif kind == "const":
        c = m.add("const", {"value": draw(st.sampled_from([0.0, 1.0, 2.0, -0.5]))}, x)
        if draw(st.booleans()):  # a constant sub-expression for const-fold
            c = m.add("pointwise", {"fn": draw(st.sampled_from(FNS))}, c)
        fn = draw(st.sampled_from(["add", "mul", "sub"]))
        v = m.add("binary", {"fn": fn}, *((x, c) if draw(st.booleans()) else (c, x)))
    elif kind == "scale":
        v = m.add("scale", {"factor": draw(st.sampled_from([1.0, 2.0, 0.5, -1.0]))}, x)
    elif kind == "shuffle":
        v = _shuffle_chain(draw, m, x)
    else:  # the same parameter-free sub-expression built twice, for cse
        fn = draw(st.sampled_from(FNS))
        norm = {"kind": "rms", "affine": False}
        a = m.add("pointwise", {"fn": fn}, m.add("norm", norm, x))
        b = m.add("pointwise", {"fn": fn}, m.add("norm", norm, x))
        v = m.add("binary", {"fn": "add"}, a, b)
    pool.append(v)


def _body(draw: st.DrawFn, m: Maker, steps: int) -> Value:
    pool = [m.x]
    for _ in range(steps):
        _step(draw, m, pool)
    # The output reads the last value and maybe one more: the rest may be dead.
    out = pool[-1]
    if len(pool) > 2 and draw(st.booleans()):
        out = m.add("binary", {"fn": "add"}, out, draw(st.sampled_from(pool[:-1])))
    return out


@st.composite
def graphs(draw: st.DrawFn, max_steps: int = 8, loops: bool = True) -> Graph:
    """A random graph (B, T, 8) -> (B, T, 8); with `loops`, maybe a loop region."""
    m = Maker("random")
    x = _body(draw, m, draw(st.integers(1, max_steps)))
    if loops and draw(st.booleans()):
        inner = Maker("body", prefix="loop.0.")
        region = inner.finish(_body(draw, inner, draw(st.integers(1, 4))))
        x = m.add("loop", {"steps": draw(st.integers(1, 2))}, x, regions=(region,))
        x = m.add("pointwise", {"fn": draw(st.sampled_from(FNS))}, x)
    return m.finish(x)


@st.composite
def shuffle_chains(draw: st.DrawFn) -> Graph:
    """x -> reshape (B, T, 2, 2, 2) -> 1-4 rearranges -> reshape (B, T, 8) -> 0-3
    scales: the chains canonicalize folds, in every composition order."""
    m = Maker("chain")
    y = m.add("reshape", {"shape": (2, 2, 2)}, m.x)
    perms = list(itertools.permutations(range(3)))
    for _ in range(draw(st.integers(1, 4))):
        y = m.add("rearrange", {"perm": draw(st.sampled_from(perms))}, y)
    y = m.add("reshape", {"shape": (D,)}, y)
    for _ in range(draw(st.integers(0, 3))):
        y = m.add("scale", {"factor": draw(st.sampled_from([0.5, 1.0, -3.0]))}, y)
    return m.finish(y)
