"""The graph IR: frozen nodes in a networkx MultiDiGraph, with regions for control ops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from archc.diagnostics import SourceLoc
from archc.ir.types import Attrs, ParamSpec, Type


@dataclass(frozen=True)
class Value:
    """Output `index` of node `node`."""

    node: int
    index: int = 0


@dataclass(frozen=True)
class Node:
    """One operation. `path` names its module and state_dict prefix (`layers.3.attention.q`).

    Control ops (loop, later scan with custom cells) own `regions`: sub-graphs whose
    single input node receives the carried value.
    """

    id: int
    op: str
    attrs: Attrs
    inputs: tuple[Value, ...]
    outputs: tuple[Type, ...]
    params: tuple[ParamSpec, ...] = ()
    loc: SourceLoc | None = field(default=None, compare=False)
    path: str = ""
    regions: tuple[Graph, ...] = ()

    def out(self, index: int = 0) -> Value:
        return Value(self.id, index)


class Graph:
    """A typed dataflow graph. Build with `add`; passes copy, never mutate an input."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._g: nx.MultiDiGraph = nx.MultiDiGraph()
        self.inputs: list[int] = []
        self.outputs: list[Value] = []
        self._next = 0

    # -- construction ---------------------------------------------------------------
    def add(
        self,
        op: str,
        attrs: Attrs | dict[str, Any],
        inputs: tuple[Value, ...] | list[Value],
        outputs: tuple[Type, ...],
        params: tuple[ParamSpec, ...] = (),
        loc: SourceLoc | None = None,
        path: str = "",
        regions: tuple[Graph, ...] = (),
    ) -> Node:
        node = Node(
            self._next,
            op,
            attrs if isinstance(attrs, Attrs) else Attrs(attrs),
            tuple(inputs),
            tuple(outputs),
            tuple(params),
            loc,
            path,
            tuple(regions),
        )
        self._next += 1
        self.insert(node)
        return node

    def insert(self, node: Node) -> None:
        """Add a fully formed node (its id must be unused)."""
        if node.id in self._g:
            raise ValueError(f"node id {node.id} already exists")
        for v in node.inputs:
            if v.node not in self._g:
                raise ValueError(f"node %{node.id} reads %{v.node}, which is not in the graph")
        self._g.add_node(node.id, node=node)
        for pos, v in enumerate(node.inputs):
            self._g.add_edge(v.node, node.id, key=pos, index=v.index)
        self._next = max(self._next, node.id + 1)

    def replace(self, node: Node) -> None:
        """Swap in a node with the same id (new attrs/inputs); edges follow its inputs."""
        old = self.node(node.id)
        for v in node.inputs:
            if v.node not in self._g:
                raise ValueError(f"node %{node.id} reads %{v.node}, which is not in the graph")
        for pos, v in enumerate(old.inputs):
            self._g.remove_edge(v.node, node.id, key=pos)
        self._g.nodes[node.id]["node"] = node
        for pos, v in enumerate(node.inputs):
            self._g.add_edge(v.node, node.id, key=pos, index=v.index)

    def remove(self, node_id: int) -> None:
        self._g.remove_node(node_id)
        self.inputs = [i for i in self.inputs if i != node_id]

    # -- queries ---------------------------------------------------------------------
    def node(self, node_id: int) -> Node:
        return self._g.nodes[node_id]["node"]

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def nodes(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order (ties broken by id)."""
        for nid in nx.lexicographical_topological_sort(self._g):
            yield self.node(nid)

    def users(self, node_id: int) -> list[Node]:
        return [self.node(n) for n in sorted(set(self._g.successors(node_id)))]

    def type_of(self, value: Value) -> Type:
        return self.node(value.node).outputs[value.index]

    def is_acyclic(self) -> bool:
        return nx.is_directed_acyclic_graph(self._g)

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The underlying networkx graph (read-only use: algorithms, drawing)."""
        return self._g

    def walk(self) -> Iterator[Node]:
        """Every node, regions included (depth first, topological within a graph)."""
        for node in self.nodes():
            yield node
            for region in node.regions:
                yield from region.walk()

    def copy(self) -> Graph:
        g = Graph(self.name)
        g._g = self._g.copy()
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g._next = self._next
        return g


def with_attrs(node: Node, **changes: Any) -> Node:
    """A copy of `node` with some attributes changed."""
    return replace(node, attrs=node.attrs.replace(**changes))
