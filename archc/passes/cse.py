"""The `cse` pass: common-subexpression elimination of parameter-free nodes.

Two nodes are the same computation when they have the same op, attributes, inputs and
output types. Nodes are visited in topological order and each later duplicate is
rewired to the first one and erased; since inputs are rewired before their users are
visited, identical parameter-free sub-graphs (e.g. `silu(norm(x))` built twice with a
norm without affine weights) merge in the same sweep.

Never merged: nodes owning parameters (each is a distinct module, even with equal
shapes), control ops with regions, graph/region inputs, and ops that draw randomness
in training (dropout with p > 0, attention with dropout > 0): two masks are not one.
The first node (and so its path and loc) is the one kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from archc.ir.graph import Graph, Node
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass
from archc.passes.rewrite import EFFECTFUL, MAX_SWEEPS, forward_uses, on_copy


def mergeable(node: Node) -> bool:
    """Whether `node` is a pure, parameter-free computation CSE may merge."""
    if node.params or node.regions or node.op in EFFECTFUL:
        return False
    if node.op == "dropout" and float(node.attrs["p"]) > 0:
        return False
    return not (node.op == "attention" and float(node.attrs["dropout"]) > 0)


def cse_graph(graph: Graph) -> bool:
    """Merge duplicates in `graph` (in place, this graph only) to a fixed point."""
    changed = False
    for _ in range(MAX_SWEEPS):
        seen: dict[tuple[object, ...], Node] = {}
        sweep = False
        for nid in [n.id for n in graph.nodes()]:
            node = graph.node(nid)  # fresh: its inputs may have been rewired
            if not mergeable(node):
                continue
            key = (node.op, node.attrs, node.inputs, node.outputs)
            try:
                first = seen.setdefault(key, node)
            except TypeError:  # an unhashable attribute value: leave the node alone
                continue
            if first is node:
                continue
            for i in range(len(node.outputs)):
                forward_uses(graph, node.out(i), first.out(i))
            graph.remove(node.id)
            sweep = True
        changed |= sweep
        if not sweep:
            break
    return changed


@register_pass
@dataclass(frozen=True)
class CSE:
    """Merge identical parameter-free nodes and sub-graphs, regions included."""

    name: ClassVar[str] = "cse"

    def run(self, graph: Graph) -> PassResult:
        return on_copy(graph, lambda g, parent: cse_graph(g))
