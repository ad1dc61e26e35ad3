"""Canonical, deterministic text of a graph (golden tests) and its structural hash."""

from __future__ import annotations

import hashlib
from typing import Any

from archc.ir.graph import Graph, Value

# Attributes not printed while None (see print_graph): any op's `kernel`; attention's
# `chunk`; block_attention's two-level `fanout` / `super_topk`.
_UNSET_HIDDEN = frozenset(
    {"kernel", "attention.chunk", "block_attention.fanout", "block_attention.super_topk"}
)


def _fmt_attr(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value.replace("_", "").replace(".", "").isalnum() else repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt_attr(v) for v in value) + ")"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def _lines(
    graph: Graph,
    indent: str,
    with_paths: bool,
    counter: list[int],
    by_path: dict[str, str] | None = None,
) -> list[str]:
    """Nodes renumbered %0, %1, ... in topological order so equal graphs print equally."""
    names: dict[int, str] = {}
    out: list[str] = []
    by_path = {} if by_path is None else by_path

    def ref(v: Value) -> str:
        base = names[v.node]
        return base if v.index == 0 else f"{base}#{v.index}"

    for node in graph.nodes():
        names[node.id] = f"%{counter[0]}"
        counter[0] += 1
        by_path[node.path] = names[node.id]
        # `kernel` is unset until assign-kernels runs; omitting None keeps the text
        # (and the structural hash) of an unassigned graph what it always was. The same
        # holds for attributes added to an op later (attention `chunk`).
        shown = {
            k: v
            for k, v in node.attrs.items()
            if not (v is None and (k in _UNSET_HIDDEN or f"{node.op}.{k}" in _UNSET_HIDDEN))
        }
        if not with_paths and shown.get("weight_from") is not None:
            # Name the tied embedding by its node number, not its (renameable) path.
            shown["weight_from"] = by_path.get(shown["weight_from"], shown["weight_from"])
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in shown.items())
        types = ", ".join(str(t) for t in node.outputs)
        line = f"{indent}{names[node.id]} = {node.op}({', '.join(ref(v) for v in node.inputs)})"
        if attrs:
            line += f" {{{attrs}}}"
        line += f" : {types}"
        if node.params:
            line += "  params[" + ", ".join(str(p) for p in node.params) + "]"
        if with_paths and node.path:
            line += f"  @{node.path}"
        out.append(line)
        for i, region in enumerate(node.regions):
            out.append(f"{indent}  region {i} {{")
            out.extend(_lines(region, indent + "    ", with_paths, counter, by_path))
            out.append(f"{indent}  }}")
    out.append(f"{indent}return {', '.join(ref(v) for v in graph.outputs)}")
    return out


def print_graph(graph: Graph, with_paths: bool = True) -> str:
    """The canonical text form: one node per line, regions nested."""
    body = _lines(graph, "  ", with_paths, [0])
    return f"graph {graph.name} {{\n" + "\n".join(body) + "\n}\n"


def structural_hash(graph: Graph) -> str:
    """A stable hash of the computation (ops, attrs, types, wiring), ignoring names."""
    text = print_graph(graph, with_paths=False).split("\n", 1)[1]
    return hashlib.sha256(text.encode()).hexdigest()[:16]
