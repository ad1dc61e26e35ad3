"""The state of one Spec -> Graph build, shared by the builders in build.py and
build_scan.py: the graph being built, the diagnostics, the node budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archc import knobs
from archc.diagnostics import Collector, SourceLoc
from archc.frontend.schema import Component, Spec
from archc.ir.graph import Graph, Value
from archc.ir.ops import ShapeError, get_op
from archc.ir.types import TensorType


class BuildAbort(Exception):
    """Stop building after an error that leaves no sensible value to continue with."""


class BudgetExhausted(BuildAbort):
    """The node budget is spent: stop the whole build, not just the current layer."""


@dataclass
class BuildContext:
    spec: Spec
    diags: Collector
    graph: Graph
    embeds: list[tuple[str, int]] = field(default_factory=list)  # (path, dim) of embeds
    define_stack: tuple[str, ...] = ()
    failed: bool = False
    counter: list[int] = field(default_factory=lambda: [0])

    def emit(
        self,
        op: str,
        attrs: dict[str, Any],
        inputs: list[Value],
        path: str,
        loc: SourceLoc | None,
        regions: tuple[Graph, ...] = (),
    ) -> Value:
        """Add one node, inferring its types from the op table."""
        if self.graph_nodes() >= knobs.max_ir_nodes():
            self.diags.error(
                f"the model unrolls into more than {knobs.max_ir_nodes()} IR nodes",
                loc,
                hint="raise ARCHC_MAX_IR_NODES if this is intended",
            )
            raise BudgetExhausted
        opdef = get_op(op)
        full = opdef.with_defaults(attrs)
        in_types = [self.graph.type_of(v) for v in inputs]
        try:
            outs = opdef.shape(full, in_types)
        except ShapeError as exc:
            self.diags.error(str(exc), loc)
            raise BuildAbort from exc
        params = opdef.params(full, in_types)
        node = self.graph.add(op, full, inputs, outs, params, loc, path, regions)
        return node.out(0)

    def graph_nodes(self) -> int:
        """Nodes built so far, shared across regions (a bound on unrolling)."""
        self.counter[0] += 1
        return self.counter[0]

    def width(self, v: Value) -> int:
        t = self.graph.type_of(v)
        assert isinstance(t, TensorType)
        if len(t.dims) != 3:
            raise ShapeError("expected a (B, T, D) tensor; does the model start with 'embed'?")
        return t.feature

    def fail(self, message: str, loc: SourceLoc | None) -> BuildAbort:
        self.diags.error(message, loc)
        return BuildAbort()


Builder = Callable[[BuildContext, Component, Value, str], Value]


def width_keeping_region(
    ctx: BuildContext,
    t: TensorType,
    prefix: str,
    loc: SourceLoc | None,
    build: Callable[[BuildContext, Value], Value],
    what: str,
    why: str,
) -> Graph:
    """A region graph (the body of a loop, hier, segment, select, ...) whose input has
    type `t`, built by `build(inner context, input value)`. Its output must keep `t`:
    otherwise "`what` changes the width from a to b; `why`" at `loc`. A failure inside
    the body marks `ctx` failed too."""
    region = Graph(prefix)
    inner = BuildContext(
        ctx.spec, ctx.diags, region, ctx.embeds, ctx.define_stack, counter=ctx.counter
    )
    attrs = {"kind": "features", "dim": t.feature}
    inp = region.add("input", attrs, [], (t,), loc=loc, path=f"{prefix}.input")
    region.inputs.append(inp.id)
    y = build(inner, inp.out())
    if inner.failed:
        ctx.failed = True
    if region.type_of(y) != t:
        raise ctx.fail(f"{what} changes the width from {t.feature} to {inner.width(y)}; {why}", loc)
    region.outputs.append(y)
    return region
