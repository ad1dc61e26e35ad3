"""The `tie-weights` pass: check and canonicalise weight ties.

The builder already resolves a tied head: the linear gets `weight_from=<embed path>`,
the op table then gives it no weight parameter of its own (so the cost model counts
the matrix once), and the torch lowering calls `F.linear(x, m.<embed>.weight, bias)`,
sharing the embedding's storage. This pass keeps that contract true after rewrites:

- every `weight_from` names exactly one embed node, anywhere in the graph (regions
  included), whose (vocab, dim) is the linear's (out, input width): a mismatch is a
  VerifyError naming the linear, before the lowering would fail on a shape;
- a tied linear carries no `weight` ParamSpec of its own (a duplicate would be counted
  and initialised twice); one that does (a graph built by hand) gets it dropped;
- a linear with its own weight is left alone: tying is a modelling choice of the spec.

So after the pass `sum(p.numel() for p in model.parameters())` equals the cost model's
parameter count. On graphs from the builder the pass changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType
from archc.ir.verify import VerifyError
from archc.passes.base import PassResult, map_nodes
from archc.passes.pipeline import register_pass


def tie_problems(graph: Graph) -> list[str]:
    """What is wrong with the ties of `graph` (empty if nothing)."""
    embeds: dict[str, list[Node]] = {}
    for node in graph.walk():
        if node.op == "embed":
            embeds.setdefault(node.path, []).append(node)
    problems = []
    for parent in [graph, *(r for n in graph.walk() for r in n.regions)]:
        for node in parent.nodes():
            src = node.attrs.get("weight_from") if node.op == "linear" else None
            if src is None:
                continue
            where = f"%{node.id} linear @{node.path}"
            found = embeds.get(src, [])
            if len(found) != 1:
                problems.append(f"{where}: weight_from={src} names {len(found)} embed nodes")
                continue
            x = parent.type_of(node.inputs[0])
            want = (found[0].attrs["vocab"], found[0].attrs["dim"])
            got = (node.attrs["out"], x.feature if isinstance(x, TensorType) else None)
            if got != want:
                problems.append(
                    f"{where}: (out, in)={got} does not fit the (vocab, dim)={want} of {src}"
                )
    return problems


def _drop_own_weight(node: Node) -> Node | None:
    """A tied linear's own `weight` ParamSpec, if a hand-built graph left one, dropped."""
    if node.op != "linear" or node.attrs.get("weight_from") is None:
        return None
    kept = tuple(p for p in node.params if p.name != "weight")
    return replace(node, params=kept) if kept != node.params else None


@register_pass
@dataclass(frozen=True)
class TieWeights:
    """Check every weight tie and drop duplicate weight parameters of tied linears."""

    name: ClassVar[str] = "tie-weights"

    def run(self, graph: Graph) -> PassResult:
        problems = tie_problems(graph)
        if problems:
            raise VerifyError(problems, after=self.name)
        return map_nodes(graph, _drop_own_weight)
