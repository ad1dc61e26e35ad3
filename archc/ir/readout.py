"""The readout of a node: the rest of the graph after it, as a graph of its own.

HRM-style training of an adaptive-depth `halt` needs the model's prediction after every
step (deep supervision, and the Q-head's "is the answer correct" target), i.e. the
layers after the halt (norm, output head) applied to each step's state. That is only
well defined when those layers read nothing but the halt's result: `readout_of`
checks it and cuts them out, keeping node ids, paths and parameters, so the code
generator can emit them once as a function that both the forward and the halt call.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from archc.ir.graph import Graph, Node, Value
from archc.ir.ops import get_op


def readout_of(graph: Graph, node: Node) -> Graph | str:
    """The nodes downstream of `node` as a graph whose one input stands for `node`'s
    output, or why they cannot be: a later node reads a value from before `node`, or
    the graph's output does not depend on it. `graph` must be a top-level graph."""
    if len(node.outputs) != 1:
        return f"{node.path} has {len(node.outputs)} outputs"
    if len(graph.outputs) != 1:
        return "the model has more than one output"
    after = nx.descendants(graph.nx, node.id)
    for nid in sorted(after):
        for v in graph.node(nid).inputs:
            if v.node != node.id and v.node not in after:
                reader, source = graph.node(nid), graph.node(v.node)
                return (
                    f"'{reader.path}' after it also reads '{source.path}' from before it "
                    "(a skip connection around the halt)"
                )
    if graph.outputs[0].node not in after | {node.id}:
        return "the model's output does not depend on it"
    sub = Graph(f"{graph.name}.readout")
    inp_id = max(graph.nx.nodes) + 1
    width = node.outputs[0].feature  # type: ignore[union-attr]
    attrs = get_op("input").with_defaults({"kind": "features", "dim": width})
    sub.insert(Node(inp_id, "input", attrs, (), node.outputs, path=f"{node.path}.result"))
    sub.inputs.append(inp_id)

    def remap(v: Value) -> Value:
        return Value(inp_id) if v.node == node.id else v

    for later in graph.nodes():
        if later.id in after:
            sub.insert(replace(later, inputs=tuple(remap(v) for v in later.inputs)))
    sub.outputs.append(remap(graph.outputs[0]))
    return sub
