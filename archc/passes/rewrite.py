"""The rewrite engine: tables of (pattern, rewrite) applied to a fixed point (DESIGN §5).

A `Pattern` matches nodes of one op; its `rewrite(graph, node)` returns

- None: no match;
- a Value: the node computes exactly that value (of the same type); every use of the
  node's output is rewired to it and the node, now unused, is erased;
- a Node with the node's id: it replaces the node (new op, attrs or inputs). Rewrites
  build it with `dataclasses.replace(node, ...)`, so it keeps the node's `loc` and
  `path`.

`apply_patterns` sweeps a graph in topological order until no pattern fires; `on_copy`
runs such a graph transform on a copy, regions included (innermost first), so a pass
never mutates its input and swaps in a new region only where one changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from archc.ir.graph import Graph, Node, Value
from archc.passes.base import PassResult

RewriteFn = Callable[[Graph, Node], "Value | Node | None"]
# A transform of one graph in place: (graph, the op owning it or None) -> changed.
GraphFn = Callable[[Graph, "Node | None"], bool]

# Ops never erased or merged although parameter-free: graph/region inputs, and control
# ops whose modules record auxiliary losses or statistics as a side effect.
EFFECTFUL = frozenset({"input", "loop", "halt", "hier", "select", "nested", "segment"})

# Bound on sweeps: every pattern shrinks the graph or a chain, so a fixed point comes
# long before; the bound only turns a buggy, cycling table into a stop, not a hang.
MAX_SWEEPS = 100


@dataclass(frozen=True)
class Pattern:
    """One local rewrite of nodes of op `op` (see the module docstring for `rewrite`)."""

    name: str
    op: str
    rewrite: RewriteFn


def forward_uses(graph: Graph, old: Value, new: Value) -> bool:
    """Rewire every use of `old` (node inputs and graph outputs) to `new`."""
    changed = False
    for user in graph.users(old.node):
        ins = tuple(new if v == old else v for v in user.inputs)
        if ins != user.inputs:
            graph.replace(replace(user, inputs=ins))
            changed = True
    outs = [new if v == old else v for v in graph.outputs]
    if outs != graph.outputs:
        graph.outputs = outs
        changed = True
    return changed


def is_used(graph: Graph, node_id: int) -> bool:
    return bool(graph.users(node_id)) or any(v.node == node_id for v in graph.outputs)


def trivially_dead(graph: Graph, node: Node) -> bool:
    """Unused, parameter-free, region-free and without side effects: safe to erase."""
    return (
        node.op not in EFFECTFUL
        and not node.params
        and not node.regions
        and node.id not in graph.inputs
        and not is_used(graph, node.id)
    )


def erase_dead(graph: Graph, dead: Callable[[Graph, Node], bool] = trivially_dead) -> bool:
    """Erase nodes `dead` accepts; consumers first, so a dead chain goes in one sweep."""
    changed = False
    for node in reversed(list(graph.nodes())):
        if dead(graph, node):
            graph.remove(node.id)
            changed = True
    return changed


def apply_patterns(graph: Graph, patterns: Iterable[Pattern]) -> bool:
    """Apply `patterns` to `graph` (in place, this graph only) until none fires, then
    erase the parameter-free nodes left unused. Returns whether anything changed."""
    by_op: dict[str, list[Pattern]] = {}
    for p in patterns:
        by_op.setdefault(p.op, []).append(p)
    changed = False
    for _ in range(MAX_SWEEPS):
        sweep = False
        for nid in [n.id for n in graph.nodes()]:
            if nid not in graph:
                continue
            sweep |= _rewrite_node(graph, graph.node(nid), by_op.get(graph.node(nid).op, ()))
        sweep |= erase_dead(graph)
        changed |= sweep
        if not sweep:
            break
    return changed


def _rewrite_node(graph: Graph, node: Node, patterns: Sequence[Pattern]) -> bool:
    """Try `patterns` on `node`; the first that fires wins (the next sweep retries)."""
    for pat in patterns:
        res = pat.rewrite(graph, node)
        if res is None:
            continue
        if isinstance(res, Value):
            if len(node.outputs) != 1 or graph.type_of(res) != node.outputs[0]:
                raise AssertionError(f"pattern {pat.name} forwards %{node.id} to a wrong type")
            fired = forward_uses(graph, node.out(), res)
            if trivially_dead(graph, node):
                graph.remove(node.id)
                fired = True
            if fired:
                return True
            continue
        if res.id != node.id or res.outputs != node.outputs:
            raise AssertionError(f"pattern {pat.name} changed the id or type of %{node.id}")
        if res != node:
            graph.replace(res)
            return True
    return False


def on_copy(graph: Graph, fn: GraphFn) -> PassResult:
    """Run `fn` on a copy of `graph` and of each of its regions (innermost first)."""
    out = graph.copy()
    changed = _regions(out, fn)
    changed |= fn(out, None)
    return PassResult(out, changed)


def _regions(graph: Graph, fn: GraphFn) -> bool:
    changed = False
    for node in list(graph.nodes()):
        if not node.regions:
            continue
        new, any_changed = [], False
        for region in node.regions:
            r = region.copy()
            ch = _regions(r, fn)
            ch = fn(r, node) or ch
            new.append(r if ch else region)
            any_changed |= ch
        if any_changed:
            graph.replace(replace(graph.node(node.id), regions=tuple(new)))
            changed = True
    return changed


def input_node(graph: Graph, node: Node, index: int = 0) -> Node:
    """The node producing `node`'s input `index`."""
    return graph.node(node.inputs[index].node)


def const_value(graph: Graph, value: Value) -> float | None:
    """The constant `value` holds if a `const` node produces it, else None."""
    src = graph.node(value.node)
    return float(src.attrs["value"]) if src.op == "const" else None
