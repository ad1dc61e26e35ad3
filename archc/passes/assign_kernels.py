"""The `assign-kernels` pass: record, per node, which backend rule runs it and why.

Nodes whose op has a Triton kernel rule (scan; fused_pointwise) ask
backends/triton/rules.py `can_lower(node, device)`; the answer is written into the
node's `kernel` attribute, where the op's schema has one: the kernel's name
("diag_scan") when it runs the node, else "torch: <why not>". Every other node is
run by its torch lowering rule. `explain(graph, device)` gives the same decision as
rows for every node (`archc compile --explain`). The device is only a name: the rules
are static, so "cuda" can be asked about on a machine without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from archc.ir.graph import Graph, Node, with_attrs
from archc.ir.ops import OPS
from archc.passes.base import PassResult, map_nodes
from archc.passes.pipeline import register_pass

TORCH = "torch"
FALLBACK = "torch: "  # prefix of a `kernel` attribute that records a fallback


class KernelRow(NamedTuple):
    """One node's backend decision: its path, op, backend ("torch" or a Triton kernel
    name) and, for a kernel-capable node that falls back, the reason."""

    path: str
    op: str
    backend: str
    reason: str


def _has_kernel_attr(op: str) -> bool:
    """Whether `op` records a backend decision: an optional string `kernel` attribute
    (conv1d's `kernel` is its width, an int, and is no such record)."""
    opdef = OPS.get(op)
    spec = opdef.attrs.get("kernel") if opdef is not None else None
    return spec is not None and str in spec.types and spec.default is None


def _kernel_capable(node: Node) -> bool:
    """Whether a Triton kernel rule covers `node`'s op (scans, and any op whose schema
    carries a `kernel` attribute for this pass to fill)."""
    return node.op == "scan" or _has_kernel_attr(node.op)


def _kernel_name(node: Node) -> str:
    """The name of the Triton kernel that runs `node` (asked only once can_lower said yes)."""
    from archc.backends.triton import rules

    named = getattr(rules, "kernel_name", None)  # a rule table may name its kernels
    if callable(named):
        name = named(node)
        if name:
            return str(name)
    if node.op == "scan":
        rule = rules.rule_for(node.attrs["cell"])
        if rule is not None:
            return rule.name
    return f"triton.{node.op}"


def choose(node: Node, device: str) -> tuple[str, str]:
    """(backend, reason) for one node on `device`: a kernel name and "ok", or "torch"
    and why no kernel runs it ("" for ops that have no kernel rule at all)."""
    if not _kernel_capable(node):
        return TORCH, ""
    from archc.backends.triton.rules import can_lower

    ok, why = can_lower(node, device)
    return (_kernel_name(node), "ok") if ok else (TORCH, why)


def kernel_attr(backend: str, reason: str) -> str:
    """The `kernel` attribute value recording a decision."""
    return backend if backend != TORCH else FALLBACK + reason


def explain(graph: Graph, device: str = "cpu") -> list[KernelRow]:
    """A row per node (regions included, in walk order) with the backend chosen."""
    rows = []
    for node in graph.walk():
        backend, why = choose(node, device)
        rows.append(KernelRow(node.path, node.op, backend, "" if why == "ok" else why))
    return rows


def format_explain(rows: list[KernelRow], device: str) -> str:
    """`archc compile --explain` text: aligned columns path, op, backend, reason."""
    head = KernelRow("path", "op", "backend", "reason")
    table = [head, *rows]
    w = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [f"kernels on {device}: {sum(r.backend != TORCH for r in rows)} of {len(rows)} "]
    lines[0] += "nodes run a Triton kernel"
    for r in table:
        line = f"  {r.path or '-':<{w[0]}}  {r.op:<{w[1]}}  {r.backend:<{w[2]}}  {r.reason}"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


@register_pass
@dataclass(frozen=True)
class AssignKernels:
    """Write each kernel-capable node's backend decision on `device` into its `kernel`
    attribute (ops without that attribute are left as they are)."""

    name: ClassVar[str] = "assign-kernels"
    device: str = "cpu"

    def run(self, graph: Graph) -> PassResult:
        def rewrite(node: Node) -> Node | None:
            if not _has_kernel_attr(node.op):
                return None
            value = kernel_attr(*choose(node, self.device))
            return None if node.attrs.get("kernel") == value else with_attrs(node, kernel=value)

        return map_nodes(graph, rewrite)
