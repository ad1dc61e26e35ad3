"""The `fuse-pointwise` pass: maximal groups of elementwise ops become one node.

Fusable ops: `pointwise` (activations), `binary` (add / mul / sub of equal shapes),
`scale`, and `dropout` with p == 0 (an identity). Dropout with p > 0 is random and
stays. A group is a connected set of fusable nodes of one output type whose values
are read only inside the group, except the value of its last node (the root); it
has at most `max_ops` members. Each group of two or more becomes one
`fused_pointwise` node (archc/ir/ops_fused.py) that keeps the root's id, path and
loc, so every reader of the root now reads the fused node. The ops are parameter-free:
state_dicts are unchanged.

Groups grow backwards from a root, visiting roots in reverse topological order: a
producer joins when all its readers are already members (its value does not escape),
it is not a graph output, and its type is the root's (no broadcasting). Fused nodes
are never fused again, and every group is grown to its limit in one run, so running
the pass twice equals running it once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from archc.ir.graph import Graph, Node, Value
from archc.ir.ops_fused import INSTR_BINARY, INSTR_UNARY, MAX_INPUTS, Instr, Program
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass


def instruction(node: Node) -> tuple | None:
    """The program instruction (without operands) of a fusable node, else None."""
    # Functions the program vocabulary knows (an op may gain functions before it does).
    if node.op == "pointwise" and node.attrs["fn"] in INSTR_UNARY:
        return (node.attrs["fn"],)
    if node.op == "binary" and node.attrs["fn"] in INSTR_BINARY:
        return (node.attrs["fn"],)
    if node.op == "dropout" and float(node.attrs["p"]) == 0.0:
        return ("identity",)
    if node.op == "scale":
        return ("scale", float(node.attrs["factor"]))
    return None


def _escapes(graph: Graph, nid: int, group: set[int]) -> bool:
    """Whether the value of node `nid` is read outside `group` (or returned)."""
    if any(v.node == nid for v in graph.outputs):
        return True
    return any(u.id not in group for u in graph.users(nid))


def grow_group(graph: Graph, root: Node, taken: set[int], max_ops: int) -> set[int]:
    """The members of the group rooted at `root` (the root included)."""
    group = {root.id}
    out_type = root.outputs[0]
    grew = True
    while grew and len(group) < max_ops:
        grew = False
        # Candidates: producers of members, highest id first (deterministic).
        cands = sorted(
            {v.node for m in group for v in graph.node(m).inputs} - group - taken, reverse=True
        )
        for pid in cands:
            p = graph.node(pid)
            if instruction(p) is None or len(p.outputs) != 1 or p.outputs[0] != out_type:
                continue
            if _escapes(graph, pid, group):
                continue
            group.add(pid)
            grew = True
            if len(group) >= max_ops:
                break
    return group


def build_program(graph: Graph, members: list[Node]) -> tuple[list[Value], Program]:
    """(external inputs, program) of `members` (in topological order); the program's
    output is the last member's value."""
    ids = {m.id for m in members}
    inputs: list[Value] = []
    slot: dict[Value, int] = {}
    for m in members:  # external inputs numbered by first use
        for v in m.inputs:
            if v.node not in ids and v not in slot:
                slot[v] = len(inputs)
                inputs.append(v)
    program: list[Instr] = []
    for m in members:
        ins = instruction(m)
        assert ins is not None
        operands = tuple(slot[v] for v in m.inputs)
        if ins[0] == "scale":
            program.append(("scale", operands[0], ins[1]))
        else:
            program.append((ins[0], *operands))
        slot[m.out()] = len(inputs) + len(program) - 1
    return inputs, tuple(program)


def fuse_graph(graph: Graph, max_ops: int) -> tuple[Graph, bool, int]:
    """(a copy of `graph` with its groups fused, changed, nodes removed); regions too."""
    out = graph.copy()
    changed, removed = False, 0
    for node in graph.nodes():  # regions first: their node ids are their own
        results = [fuse_graph(r, max_ops) for r in node.regions]
        if any(c for _, c, _ in results):
            out.replace(replace(node, regions=tuple(g for g, _, _ in results)))
            changed = True
            removed += sum(n for _, _, n in results)
    if max_ops < 2:
        return out, changed, removed
    order = list(out.nodes())
    position = {n.id: k for k, n in enumerate(order)}
    taken: set[int] = set()
    for root in reversed(order):
        if root.id in taken or instruction(root) is None or len(root.outputs) != 1:
            continue
        group = grow_group(out, root, taken, max_ops)
        members = sorted((out.node(i) for i in group), key=lambda n: position[n.id])
        inputs, program = build_program(out, members)
        while len(inputs) > MAX_INPUTS and len(members) > 1:  # rare: shrink to fit
            group.discard(members[0].id)
            members = members[1:]
            inputs, program = build_program(out, members)
        taken |= group
        if len(group) < 2:
            continue
        fused = replace(
            root,
            op="fused_pointwise",
            attrs=type(root.attrs)(program=program, kernel=None),
            inputs=tuple(inputs),
            params=(),
        )
        out.replace(fused)
        for m in members[:-1]:
            out.remove(m.id)
        changed = True
        removed += len(group) - 1
    return out, changed, removed


@register_pass
@dataclass(frozen=True)
class FusePointwise:
    """Fuse maximal groups of elementwise ops (at most `max_ops` each) into one node."""

    name: ClassVar[str] = "fuse-pointwise"
    max_ops: int = 16

    def run(self, graph: Graph) -> PassResult:
        out, changed, _ = fuse_graph(graph, self.max_ops)
        return PassResult(out, changed)

    def removed(self, graph: Graph) -> int:
        """How many nodes the pass removes from `graph` (regions included)."""
        return fuse_graph(graph, self.max_ops)[2]
