"""The spec-language reference (docs/reference.md), generated from the code.

Each registered component is documented from its registry entry and parameter model
(types, defaults, allowed values, descriptions), and from what it lowers to: a tiny
probe spec holding just that component is built into IR, and the reference lists the
op-table ops it produced, its input -> output types and the cost model's figures. The
op table itself (archc/ir/ops.py) closes the document. Nothing here is hand-written
per component, so new components and ops appear on regeneration:

    archc export-schema --reference -o docs/reference.md
    python -m archc.frontend.reference > docs/reference.md

Bodies are probed as `[{linear: {}}]` (one width-keeping layer per body item); a
component with required parameters is probed with its first use in specs/*.yaml.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from archc.diagnostics import DiagnosticError
from archc.frontend.components import ComponentDef, component_names, get_component
from archc.frontend.json_schema import needs_params
from archc.frontend.tasks import TASK_PARAMS, task_names
from archc.frontend.train import TrainConfig

REGENERATE = "archc export-schema --reference -o docs/reference.md"
SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
PROBE_VOCAB, PROBE_D, SEQ_LEN = 40, 24, 1024
_BOUNDS = {
    "exclusiveMinimum": "> {}",
    "minimum": ">= {}",
    "exclusiveMaximum": "< {}",
    "maximum": "<= {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
}


# -- attribute tables -------------------------------------------------------------------


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short type text of a JSON-Schema node: `int > 0`, `rms | layer`, `list[int]`."""
    if "$ref" in node:
        return _type(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return " | ".join(_type(n, defs) for n in node["anyOf"])
    if "const" in node:
        return repr(node["const"]) if not isinstance(node["const"], str) else node["const"]
    if "enum" in node:
        return " | ".join(str(v) for v in node["enum"])
    kind = node.get("type")
    names = {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}
    if kind == "array":
        if "prefixItems" in node:
            text = "[" + ", ".join(_type(n, defs) for n in node["prefixItems"]) + "]"
        else:
            text = f"list[{_type(node.get('items', {}), defs)}]"
    elif kind == "object":
        if "properties" in node:
            text = "{" + ", ".join(node["properties"]) + "}"
        else:
            text = f"map[str, {_type(node.get('additionalProperties', {}), defs)}]"
    else:
        text = names.get(kind, str(kind)) if kind else "any"
    bounds = [fmt.format(node[k]) for k, fmt in _BOUNDS.items() if k in node]
    if "pattern" in node:
        bounds.append(f"matching `{node['pattern']}`")
    return " ".join([text, *bounds])


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(field: dict[str, Any], required: bool) -> str:
    if required:
        return "*required*"
    value = field.get("default")
    if value is None:
        return "null" if "default" in field else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if not isinstance(value, str) else value


def _row(name: str, field: dict[str, Any], required: bool, defs: dict[str, Any]) -> str:
    return (
        f"| `{name}` | {_cell(_type(field, defs))} | {_cell(_default(field, required))}"
        f" | {_cell(field.get('description', ''))} |"
    )


def param_table(model: Any, replace: dict[str, str] | None = None) -> list[str]:
    """Markdown rows: name | type and allowed values | default | description; nested
    models' fields follow as `Model.field`. `replace` gives whole rows for some fields
    (their nested models are then left out)."""
    replace = replace or {}
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = ["| attribute | type / allowed values | default | description |", "|---|---|---|---|"]
    used: set[str] = set()
    for name, field in schema.get("properties", {}).items():
        if name in replace:
            rows.append(replace[name])
            continue
        rows.append(_row(name, field, name in required, defs))
        used |= set(re.findall(r"#/\$defs/(\w+)", json.dumps(field)))
    for name in sorted(used & set(defs)):
        sub = defs[name]
        rows.append(f"| *{name}* | | | {_cell(sub.get('description', ''))} |")
        sub_required = set(sub.get("required", []))
        for key, field in sub.get("properties", {}).items():
            rows.append(_row(f"{name}.{key}", field, key in sub_required, defs))
    return rows if len(rows) > 2 else ["(no attributes)"]


# -- lowering probes --------------------------------------------------------------------


def _example(name: str) -> tuple[Any, int, int | None, str] | None:
    """(value, d_model, vocab, file) of the first `{name: value}` in specs/*.yaml."""
    from archc.frontend.yaml import load_yaml

    for path in sorted(SPECS_DIR.glob("*.yaml")):
        data, _ = load_yaml(path.read_text(), str(path))
        stack = [data]
        while stack:
            node = stack.pop(0)
            if isinstance(node, dict):
                if len(node) == 1 and name in node and isinstance(node[name], dict):
                    return node[name], data.get("d_model"), data.get("vocab"), path.name
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return None


def _stub_body(cdef: ComponentDef, value: Any) -> Any:
    """The value with each body item replaced by a width-keeping `linear`."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key in ("body", cdef.body_alias):
        if key and key in out:
            items = out.pop(key)
            out["body"] = [{"linear": {}} for _ in (items if isinstance(items, list) else [items])]
    return out


def _probe_item(cdef: ComponentDef, d: int, example: bool, vocab: int) -> tuple[Any, int, int, str]:
    """(layer item, d_model, vocab, how it was chosen) for probing `cdef`."""
    if example:
        found = _example(cdef.name)
        if found is None:
            raise LookupError("no default form and no use in specs/")
        value, dm, vocab, file = found
        return {cdef.name: _stub_body(cdef, value)}, dm, vocab or PROBE_VOCAB, f"`{file}`"
    if cdef.body:
        return {cdef.name: {"body": [{"linear": {}}]}}, d, vocab, "defaults"
    return cdef.name, d, vocab, "defaults"


def _probe(
    cdef: ComponentDef, d: int, example: bool = False, vocab: int = PROBE_VOCAB
) -> dict[str, Any]:
    from archc.frontend.locs import LocMap
    from archc.frontend.schema import build_spec
    from archc.ir.build import build_graph
    from archc.ir.cost import model_cost

    item, dm, vocab, how = _probe_item(cdef, d, example, vocab)
    data = {"model": "probe", "vocab": vocab, "d_model": dm, "layers": [item]}
    graph = build_graph(build_spec(data, LocMap()))
    cost = model_cost(graph, SEQ_LEN)
    inp = graph.node(graph.inputs[0]).outputs[0]
    ops = Counter(n.op for n in graph.walk() if n.op != "input")
    return {
        "d": dm,
        "vocab": vocab,
        "how": how,
        "in": inp,
        "out": graph.type_of(graph.outputs[0]),
        "ops": ops,
        "cost": cost,
    }


def _dims(t1: Any, t2: Any, p1: dict[str, Any], p2: dict[str, Any]) -> str:
    """`(B, T, 2D)`: sizes that scale with d_model written in D, the vocabulary as V."""
    d1, d2 = p1["d"], p2["d"]
    if not hasattr(t1, "dims") or not hasattr(t2, "dims") or len(t1.dims) != len(t2.dims):
        return str(t1)
    out = []
    for a, b in zip(t1.dims, t2.dims, strict=True):
        if (a, b) == (p1["vocab"], p2["vocab"]) and a != b:
            out.append("V")
        elif isinstance(a, int) and isinstance(b, int) and a != b and a * d2 == b * d1:
            k = a / d1
            out.append("D" if k == 1 else f"{k:g}D" if k >= 1 else f"D/{d1 / a:g}")
        else:
            out.append(str(a))
    return f"({', '.join(out)}) {t1.dtype}"


def lowering(cdef: ComponentDef) -> list[str]:
    """Markdown lines: what the component builds, its types and cost figures."""
    try:
        try:
            p1 = _probe(cdef, PROBE_D, example=needs_params(cdef))
        except DiagnosticError:
            # Defaults that a cross-field rule rejects (select needs a program).
            p1 = _probe(cdef, PROBE_D, example=True)
        p2 = _probe(cdef, 2 * PROBE_D, vocab=PROBE_VOCAB + 1) if p1["how"] == "defaults" else p1
    except (DiagnosticError, LookupError) as exc:
        msg = exc.render() if isinstance(exc, DiagnosticError) else str(exc)
        return [f"- lowering: not probed ({_cell(msg.splitlines()[0])})"]
    d1 = p1["d"]
    c = p1["cost"]
    ops = ", ".join(
        f"[`{op}`](#op-{op})" + (f" x{n}" if n > 1 else "") for op, n in sorted(p1["ops"].items())
    )
    where = f"d_model={d1}, vocab={p1['vocab']}, T={SEQ_LEN}; probed with {p1['how']}"
    return [
        f"- builds: {ops or '(no ops)'}",
        f"- shape: {_dims(p1['in'], p2['in'], p1, p2)} -> {_dims(p1['out'], p2['out'], p1, p2)}",
        f"- cost ({where}): {c.parameters} parameters, "
        f"{c.forward_flops_per_token:g} forward matmul FLOPs/token, "
        f"state {c.state_bytes_per_sequence} bytes/sequence, "
        f"KV cache {c.kv_cache_bytes_per_token} bytes/token",
    ]


# -- the document -----------------------------------------------------------------------


def _component_section(name: str) -> list[str]:
    cdef = get_component(name)
    assert cdef is not None
    lines = [f"### `{name}`", "", _cell(cdef.doc) + ".", ""]
    own = cdef.params.__dict__.get("__doc__")
    if own and cdef.params.__name__ != "BodyParams":
        lines += [" ".join(own.split()), ""]
    forms = []
    if not needs_params(cdef) and not cdef.body:
        forms.append(f"`{name}`")
    if cdef.primary and cdef.body:
        forms.append(f"DSL `{name}(VALUE) {{ ... }}` (sets `{cdef.primary}`)")
    elif cdef.primary:
        forms.append(f"`{name}: VALUE` (sets `{cdef.primary}`; DSL `{name}(VALUE)`)")
    forms.append(f"`{name}: {{...}}`")
    if cdef.body:
        alias = f" or `{cdef.body_alias}: [...]`" if cdef.body_alias else ""
        lines += [
            f"Takes a body of layers: `body: [...]`{alias}"
            + (f", or `{name}: [...]` with default attributes." if not needs_params(cdef) else "."),
            "",
        ]
    lines += ["Forms: " + ", ".join(forms) + ".", ""]
    lines += [*param_table(cdef.params), ""]
    lines += [*lowering(cdef), ""]
    return lines


def _op_section() -> list[str]:
    from archc.ir.opdef import REQUIRED
    from archc.ir.ops import OPS

    lines = ["## Ops (the op table, archc/ir/ops.py)", ""]
    for name in sorted(OPS):
        op = OPS[name]
        lo, hi = op.arity
        arity = f"{lo}" if lo == hi else f"{lo}-{hi}"
        flags = [f for f, on in (("regions", op.regions), ("elementwise", op.elementwise)) if on]
        lines += [
            f'<a id="op-{name}"></a>',
            f"### op `{name}`",
            "",
            _cell(op.doc or "(no doc)"),
            "",
        ]
        lines += [f"- inputs: {arity}" + (f"; {', '.join(flags)}" if flags else "")]
        for key, spec in op.attrs.items():
            types = " | ".join(t.__name__ for t in spec.types)
            default = "required" if spec.default is REQUIRED else f"default `{spec.default!r}`"
            choices = f", one of {', '.join(map(repr, spec.choices))}" if spec.choices else ""
            lines.append(f"- `{key}`: {types}, {default}{choices}")
        lines.append("")
    return lines


def render_reference() -> str:
    """The whole reference as Markdown."""
    from archc.ir import cost

    lines = [
        "# archc spec-language reference",
        "",
        f"Generated from the code; do not edit. Regenerate with `{REGENERATE}`.",
        "",
        "A YAML spec has the top-level keys `model`, `vocab`, `d_model`, `vars`, `define`, "
        "`layers`, `train`, `search` (and `extends`). Layer items are a component name, a "
        "`define`d block name, or `{component: attributes}`; attributes may be written with "
        "`${...}` references. The JSON Schema (`archc export-schema`) states the same rules.",
        "",
        "Shapes are (B, T, D) with D = d_model; `D` in a shape is a size that scales with "
        "d_model. Cost figures come from the cost model:",
        "",
        *("> " + line if line else ">" for line in (cost.__doc__ or "").strip().splitlines()),
        "",
        "## Components",
        "",
    ]
    for name in component_names():
        lines += _component_section(name)
    lines += ["## `train:`", "", " ".join((TrainConfig.__doc__ or "").split()), ""]
    task_type = _cell(" | ".join([*task_names(), "{name: task, ...its parameters}", "null"]))
    task_row = f"| `task` | {task_type} | null | the training task (below) |"
    lines += [*param_table(TrainConfig, {"task": task_row}), ""]
    lines += ["### Tasks", "", "`task: NAME` or `task: {name: NAME, ...}`.", ""]
    for name in task_names():
        doc = " ".join((TASK_PARAMS[name].__doc__ or "").split())
        lines += [f"#### task `{name}`", "", doc, "", *param_table(TASK_PARAMS[name]), ""]
    from archc.search import space

    lines += ["## `search:`", "", "From archc/search/space.py:", ""]
    lines += [(space.__doc__ or "").strip(), ""]
    lines += _op_section()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
