"""The IR verifier: every structural and typing invariant a well-formed graph keeps.

Problems here are compiler bugs (or a broken pass), not user mistakes: `verify`
raises `VerifyError` naming each broken node.
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.ir.ops import OPS, ShapeError
from archc.ir.types import TensorType


class VerifyError(AssertionError):
    """The graph breaks an IR invariant; `problems` lists each one."""

    def __init__(self, problems: list[str], after: str | None = None) -> None:
        self.problems = problems
        head = f"IR verification failed after pass '{after}'" if after else "IR verification failed"
        super().__init__(head + ":\n  " + "\n  ".join(problems))


def _retimed_input(node: Node, outs: tuple[object, ...]) -> bool:
    """A region input whose time dim its parent op set (hier: T/4); the parent's
    region check verifies that type."""
    if node.op != "input" or len(outs) != 1 or len(node.outputs) != 1:
        return False
    a, b = outs[0], node.outputs[0]
    return (
        isinstance(a, TensorType)
        and isinstance(b, TensorType)
        and a.dtype == b.dtype
        and len(a.dims) == len(b.dims) == 3
        and (a.dims[0], a.dims[2]) == (b.dims[0], b.dims[2])
    )


def _check_node(graph: Graph, node: Node, problems: list[str], seen_paths: set[str]) -> None:
    where = f"%{node.id} {node.op} @{node.path}"
    opdef = OPS.get(node.op)
    if opdef is None:
        problems.append(f"{where}: unknown op")
        return
    lo, hi = opdef.arity
    if not lo <= len(node.inputs) <= hi:
        problems.append(f"{where}: {len(node.inputs)} inputs, op takes {lo}..{hi}")
        return
    problems.extend(f"{where}: {p}" for p in opdef.check_attrs(node.attrs))
    in_types = []
    for v in node.inputs:
        if v.node not in graph:
            problems.append(f"{where}: input %{v.node} does not exist")
            return
        src = graph.node(v.node)
        if not 0 <= v.index < len(src.outputs):
            problems.append(f"{where}: input %{v.node}#{v.index} out of range")
            return
        in_types.append(src.outputs[v.index])
    try:
        outs = opdef.shape(node.attrs, in_types)
    except ShapeError as exc:
        problems.append(f"{where}: shape rule fails: {exc}")
        return
    if tuple(outs) != node.outputs and not _retimed_input(node, tuple(outs)):
        problems.append(f"{where}: recorded types {node.outputs} but shape rule gives {outs}")
    params = opdef.params(node.attrs, in_types)
    if tuple(params) != node.params:
        problems.append(f"{where}: recorded params differ from the op table's")
    if node.params:
        if not node.path:
            problems.append(f"{where}: a node with parameters needs a path")
        elif node.path in seen_paths:
            problems.append(f"{where}: path {node.path} is used twice")
        seen_paths.add(node.path)
    if opdef.regions:
        if not node.regions:
            problems.append(f"{where}: control op without regions")
        for region in node.regions:
            if len(region.inputs) != 1 or len(region.outputs) != 1:
                problems.append(f"{where}: a region needs one input and one output")
                continue
            r_in = region.node(region.inputs[0]).outputs[0]
            # An op may run its region on another type (hier: the coarse sequence).
            expect = opdef.extra.get("region_type", lambda a, t: t[0])(node.attrs, in_types)
            if r_in != expect or region.type_of(region.outputs[0]) != expect:
                problems.append(f"{where}: region does not map {expect} to itself")
            _check_graph(region, problems, seen_paths)
    elif node.regions:
        problems.append(f"{where}: op has no regions but the node carries some")


def _check_graph(graph: Graph, problems: list[str], seen_paths: set[str]) -> None:
    if not graph.is_acyclic():
        problems.append(f"graph {graph.name}: has a cycle")
        return
    for nid in graph.inputs:
        if nid not in graph or graph.node(nid).op != "input":
            problems.append(f"graph {graph.name}: input %{nid} is not an input node")
    for node in graph.nodes():
        _check_node(graph, node, problems, seen_paths)
    if not graph.outputs:
        problems.append(f"graph {graph.name}: no outputs")
    for v in graph.outputs:
        if v.node not in graph:
            problems.append(f"graph {graph.name}: output %{v.node} does not exist")
        elif not isinstance(graph.type_of(v), TensorType):
            problems.append(f"graph {graph.name}: output %{v.node} is not a tensor")


def verify(graph: Graph, after: str | None = None) -> None:
    """Raise VerifyError if the graph (with its regions) breaks any invariant."""
    problems: list[str] = []
    _check_graph(graph, problems, set())
    tied = {n.attrs.get("weight_from") for n in graph.walk() if n.op == "linear"} - {None}
    embeds = {n.path for n in graph.walk() if n.op == "embed"}
    for t in sorted(tied):
        if t not in embeds:
            problems.append(f"weight_from={t} names no embed node")
    if problems:
        raise VerifyError(problems, after)
