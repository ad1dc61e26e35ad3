"""The `dce` pass: dead-code elimination, regions included.

A node is live when a graph output depends on it, when it is a graph or region input
(never removed: they are the interface), when a live-or-not tied linear names it in
`weight_from` (the embedding's weight is the head's), when it is a control op whose
module records losses or statistics as a side effect (rewrite.EFFECTFUL), or when it is
a linear inside a LoRA loop (the loop's `lora_targets` count those linears by
position). Everything else is removed, parameters included: an unused branch with a
linear in it costs parameters, optimizer state and checkpoint bytes for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass
from archc.passes.rewrite import EFFECTFUL


def _roots(graph: Graph, tied: set[str], lora: bool) -> set[int]:
    roots = set(graph.inputs) | {v.node for v in graph.outputs}
    for node in graph.nodes():
        if (
            node.op in EFFECTFUL
            or (node.op == "embed" and node.path in tied)
            or (lora and node.op == "linear")
        ):
            roots.add(node.id)
    return roots


def dce_graph(graph: Graph, tied: set[str], lora: bool = False) -> bool:
    """Remove dead nodes from `graph` and (copies of) its regions, in place."""
    changed = False
    for node in list(graph.nodes()):
        if not node.regions:
            continue
        inner_lora = lora or (node.op == "loop" and node.attrs["lora"] > 0)
        new, any_changed = [], False
        for region in node.regions:
            r = region.copy()
            ch = dce_graph(r, tied, inner_lora)
            new.append(r if ch else region)
            any_changed |= ch
        if any_changed:
            graph.replace(replace(node, regions=tuple(new)))
            changed = True
    live: set[int] = set()
    stack = list(_roots(graph, tied, lora))
    while stack:  # everything a root reads, transitively
        nid = stack.pop()
        if nid not in live:
            live.add(nid)
            stack.extend(graph.nx.predecessors(nid))
    for node in reversed(list(graph.nodes())):
        if node.id not in live:
            graph.remove(node.id)
            changed = True
    return changed


def tied_embeds(graph: Graph) -> set[str]:
    """Paths of the embeddings some linear (anywhere) takes its weight from."""
    return {n.attrs["weight_from"] for n in graph.walk() if n.op == "linear"} - {None}


@register_pass
@dataclass(frozen=True)
class DCE:
    """Remove nodes nothing depends on (see the module docstring for what is kept)."""

    name: ClassVar[str] = "dce"

    def run(self, graph: Graph) -> PassResult:
        out = graph.copy()
        changed = dce_graph(out, tied_embeds(graph))
        return PassResult(out, changed)
