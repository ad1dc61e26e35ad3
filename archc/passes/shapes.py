"""The `shapes` pass: recompute every node's output types from the op table.

Walks each graph in topological order, so every node sees its inputs' corrected
types, and descends into regions: a region's input node takes the type its parent op
runs the region on (the op's `region_type`, e.g. hier's coarse (B, T', D)), not its
own shape rule's. A well-typed graph comes back unchanged (changed=False); a node
whose recorded types went stale (a pass rewired it, or edited an attribute the shape
depends on) gets the types its rule gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph, Node
from archc.ir.ops import OPS, ShapeError
from archc.ir.types import Type
from archc.ir.verify import VerifyError
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass


def _same_region_type(attrs: object, ins: list[Type]) -> Type:
    return ins[0]


def _fail(node: Node, why: str) -> VerifyError:
    return VerifyError([f"%{node.id} {node.op} @{node.path}: {why}"], after="shapes")


def infer_types(graph: Graph, region_input: Type | None = None) -> tuple[Graph, bool]:
    """(a copy of `graph` with every type recomputed, whether any type changed).

    `region_input`: the type the parent op feeds this graph's input (regions only).
    Raises VerifyError when a shape rule rejects its inputs (an ill-formed graph).
    """
    out = graph.copy()
    changed = False
    for old in graph.nodes():
        opdef = OPS.get(old.op)
        if opdef is None:
            raise _fail(old, "unknown op")
        ins = [out.type_of(v) for v in old.inputs]
        if region_input is not None and old.id in graph.inputs:
            outs: tuple[Type, ...] = (region_input,)
        else:
            try:
                outs = tuple(opdef.shape(old.attrs, ins))
            except ShapeError as exc:
                raise _fail(old, f"shape rule fails: {exc}") from None
        regions = old.regions
        if old.regions:
            inner = opdef.extra.get("region_type", _same_region_type)(old.attrs, ins)
            results = [infer_types(r, inner) for r in old.regions]
            if any(c for _, c in results):
                regions = tuple(g for g, _ in results)
        if outs != old.outputs or regions is not old.regions:
            out.replace(replace(old, outputs=outs, regions=regions))
            changed = True
    return out, changed


@register_pass
@dataclass(frozen=True)
class Shapes:
    """Shape inference: every node's outputs as its op's shape rule gives them."""

    name: ClassVar[str] = "shapes"

    def run(self, graph: Graph) -> PassResult:
        new, changed = infer_types(graph)
        return PassResult(new if changed else graph, changed)
