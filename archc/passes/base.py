"""What every pass returns, and the helper that rewrites nodes through regions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from archc.ir.graph import Graph, Node


@dataclass(frozen=True)
class PassResult:
    """A pass's output graph (a copy; the input is never mutated) and whether it changed."""

    graph: Graph
    changed: bool


def map_nodes(graph: Graph, rewrite: Callable[[Node], Node | None]) -> PassResult:
    """Apply `rewrite` to every node, regions included; None keeps the node as it is.

    Returns a copy of `graph` (and of every region that changed) with the rewritten
    nodes swapped in; node ids, inputs and edges are kept, so `rewrite` may change
    attributes but not wiring.
    """
    out = graph.copy()
    changed = False
    for node in graph.nodes():
        new = rewrite(node) or node
        regions = tuple(map_nodes(r, rewrite) for r in new.regions)
        if any(r.changed for r in regions):
            new = replace(new, regions=tuple(r.graph for r in regions))
        if new is not node:
            out.replace(new)
            changed = True
    return PassResult(out, changed)
