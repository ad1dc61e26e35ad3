"""Graphviz DOT text of a graph; loop regions drawn as clusters."""

from __future__ import annotations

from archc.ir.graph import Graph


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _body(graph: Graph, prefix: str, lines: list[str], indent: str) -> None:
    for node in graph.nodes():
        nid = f"{prefix}n{node.id}"
        label = node.op
        if node.op in ("pointwise", "binary", "norm", "posenc"):
            label += f" {node.attrs.get('fn', node.attrs.get('kind', ''))}"
        types = ", ".join(str(t) for t in node.outputs)
        tip = node.path or node.op
        lines.append(
            f'{indent}{nid} [label="{_esc(label)}\\n{_esc(types)}", tooltip="{_esc(tip)}"];'
        )
        for v in node.inputs:
            lines.append(f"{indent}{prefix}n{v.node} -> {nid};")
        for c, region in enumerate(node.regions):
            sub = f"{nid}r{c}_"
            lines.append(f"{indent}subgraph cluster_{sub} {{")
            lines.append(
                f'{indent}  label="{_esc(node.path)} copy {c} '
                f'(x{node.attrs.get("steps", 1)} steps)"; style=dashed;'
            )
            _body(region, sub, lines, indent + "  ")
            lines.append(f"{indent}}}")
            lines.append(f"{indent}{nid} -> {sub}n{region.inputs[0]} [style=dotted];")


def to_dot(graph: Graph) -> str:
    lines = [
        f'digraph "{_esc(graph.name)}" {{',
        "  rankdir=TB;",
        '  node [shape=box, fontname="Helvetica", fontsize=10];',
    ]
    _body(graph, "", lines, "  ")
    lines.append("}")
    return "\n".join(lines) + "\n"
