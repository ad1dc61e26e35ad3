"""A JSON Schema (draft 2020-12) of YAML specs, generated from the pydantic models.

For editors (the YAML language server: `# yaml-language-server: $schema=spec.schema.json`)
and for checking specs outside archc. Everything comes from the code: the component
registry (components.py, each component's parameter model), the top-level keys (schema.py),
`train:` (train.py, tasks.py) and the `search:` syntax (archc/search/space.py), so a newly
registered component or task appears without changes here.

The schema describes *raw* spec data, before `extends`, overrides and `${...}`: any scalar
may instead be a `${...}` string, and a spec with `extends:` may omit required keys.
Some rules stay with the loader (the schema accepts more than it, never less): that a
bare name is a component or a block the spec `define`s, cross-field rules of parameter
models (e.g. select's "exactly one of program/programs"), and the textual forms checked
by validators (`tie: cycle(k)`, `carry: memory-tokens(n)`, step samplers).
Importing this module never imports torch.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from archc.frontend.components import ComponentDef, component_names, get_component
from archc.frontend.schema import _BLOCK_NAME, _TopLevel
from archc.frontend.tasks import TASK_PARAMS, task_names
from archc.frontend.train import TrainConfig
from archc.search.space import _MODIFIERS, CONSTRAINT_KEYS, KINDS, TEMPLATE

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_REF = "#/$defs/{model}"
_SCALARS = {"string", "integer", "number", "boolean", "null"}
_META = ("title", "description", "default", "examples")
# An override path as resolve.py parses it: `layers[2].attention.heads`, `train.lr`.
_PATH = r"^[A-Za-z_][\w\-]*(\[\d+\]|\.[A-Za-z_][\w\-]*|\.\d+)*$"
_ALT = r"^[A-Za-z0-9_.\-]+$"  # template and alternative names (space.py _ALT_NAME)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


class _Defs:
    """The shared `$defs` table; pydantic's nested models are merged in by name."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def add(self, name: str, schema: Any) -> dict[str, str]:
        if name in self.defs and self.defs[name] != schema:
            raise ValueError(f"two different schemas named {name!r}")
        self.defs[name] = schema
        return ref(name)

    def model(self, model: type[BaseModel]) -> dict[str, Any]:
        """The model's own schema (inlined); its nested models go to `$defs`."""
        schema = model.model_json_schema(ref_template=_REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.add(name, _relax_model(_find_model(model, name), with_interp(sub)))
        return _relax_model(model, with_interp(schema))


def _find_model(root: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The nested model class called `name` reachable from `root`'s fields."""
    seen: set[type] = set()
    stack: list[Any] = [root]
    while stack:
        cls = stack.pop()
        if not isinstance(cls, type) or cls in seen:
            continue
        seen.add(cls)
        if issubclass(cls, BaseModel):
            if cls.__name__ == name:
                return cls
            for field in cls.model_fields.values():
                stack.extend(_types_in(field.annotation))
    return None


def _types_in(annotation: Any) -> list[Any]:
    out = [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_types_in(arg))
    return out


def _relax_model(model: type[BaseModel] | None, schema: dict[str, Any]) -> dict[str, Any]:
    """Fields with a `before`/`wrap`/`plain` validator accept inputs their type does not
    say (hier's `down: router` shorthand): allow any scalar there too."""
    if model is None:
        return schema
    props = schema.get("properties", {})
    for dec in model.__pydantic_decorators__.field_validators.values():
        if dec.info.mode == "after":
            continue
        for field in dec.info.fields:
            if field in props:
                inner = {k: v for k, v in props[field].items() if k not in _META}
                meta = {k: v for k, v in props[field].items() if k in _META}
                props[field] = {
                    **meta,
                    "anyOf": [inner, {"type": ["string", "integer", "number", "boolean"]}],
                    "$comment": "a validator also accepts shorthand scalars here",
                }
    return schema


def _scalar_like(node: dict[str, Any]) -> bool:
    t = node.get("type")
    types = set(t) if isinstance(t, list) else {t} if t else set()
    if types and types <= _SCALARS:
        return True
    return not types and ("enum" in node or "const" in node)


def with_interp(node: Any) -> Any:
    """`node` with every scalar position also accepting a `${...}` string (resolve.py
    evaluates those before validation; `${a * 2}` may become a number)."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("properties", "$defs"):
        if key in node:
            node[key] = {k: with_interp(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = with_interp(node[key])
    if "prefixItems" in node:
        node["prefixItems"] = [with_interp(v) for v in node["prefixItems"]]
    if "anyOf" in node:
        members = [with_interp(v) for v in node["anyOf"]]
        if any(isinstance(m, dict) and _scalar_like(m) for m in members):
            members.append(ref("interpolation"))
        node["anyOf"] = members
        return node
    if _scalar_like(node):
        meta = {k: v for k, v in node.items() if k in _META}
        inner = {k: v for k, v in node.items() if k not in _META}
        return {**meta, "anyOf": [inner, ref("interpolation")]}
    return node


def _describe(cdef: ComponentDef) -> str:
    # The parameter model's own docstring only (a shared base's would repeat).
    parts = [cdef.doc, cdef.params.__dict__.get("__doc__") or ""]
    if cdef.primary and not cdef.body:
        parts.append(f"Shorthand: `{cdef.name}: VALUE` sets `{cdef.primary}`.")
    if cdef.body:
        alias = f" (or `{cdef.body_alias}`)" if cdef.body_alias else ""
        parts.append(f"Takes a body of layers: `{cdef.name}: [...]` or `body: [...]`{alias}.")
    return " ".join(" ".join(p.split()) for p in parts if p)


def needs_params(cdef: ComponentDef) -> bool:
    """Whether the component's default parameters are invalid (it cannot be written bare):
    a required field, or a cross-field rule such as select's program/programs."""
    try:
        cdef.params.model_validate({})
    except ValidationError:
        return True
    return False


def _component(defs: _Defs, cdef: ComponentDef) -> dict[str, str]:
    """The value of `{name: VALUE}` for one component, as schema.py accepts it."""
    params = defs.model(cdef.params)
    params.pop("title", None)
    props = dict(params.get("properties", {}))
    required = list(params.get("required", []))
    forms: list[dict[str, Any]] = []
    if cdef.body:
        props["body"] = {**ref("body"), "description": "the nested layers"}
        mapping = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        if cdef.body_alias:
            props[cdef.body_alias] = {**ref("body"), "description": "the nested layers (alias)"}
            mapping["anyOf"] = [{"required": ["body"]}, {"required": [cdef.body_alias]}]
        else:
            required.append("body")
        if required:
            mapping["required"] = required
        forms.append(mapping)
        if not needs_params(cdef):
            forms.append({**ref("layerList"), "description": "the body (default parameters)"})
    else:
        mapping = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            mapping["required"] = required
        forms.append(mapping)
        if not needs_params(cdef):
            forms.append({"type": "null", "description": "default parameters"})
    if cdef.primary is not None and not cdef.body:  # a body needs the mapping form
        primary = {k: v for k, v in props[cdef.primary].items() if k != "title"}
        forms.append({**primary, "description": f"shorthand for {{{cdef.primary}: VALUE}}"})
    schema = {"description": _describe(cdef), "anyOf": forms}
    return defs.add(f"component.{cdef.name}", schema)


def _layers(defs: _Defs) -> None:
    names = component_names()
    props = {}
    for name in names:
        cdef = get_component(name)
        assert cdef is not None
        props[name] = _component(defs, cdef)
    bare = [n for n in names if not get_component(n).body and not needs_params(get_component(n))]  # type: ignore[union-attr]
    defs.add(
        "layer",
        {
            "description": "A component name, a block of `define`, or {component: parameters}.",
            "anyOf": [
                {
                    "enum": bare,
                    "description": "a component with default parameters",
                },
                {
                    "type": "string",
                    "pattern": _BLOCK_NAME,
                    "not": {"enum": names},
                    "description": "a block declared under `define`",
                },
                ref("interpolation"),
                {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": props,
                    "additionalProperties": False,
                },
            ],
        },
    )
    defs.add("layerList", {"type": "array", "items": ref("layer")})
    # A body (and a define) may also be a single item where a list is expected.
    defs.add("body", {"anyOf": [ref("layerList"), ref("layer")]})
    defs.add(
        "interpolation",
        {
            "type": "string",
            "pattern": r"\$\{[^{}]*\}",
            "description": "${expr}: a reference to spec values (d_model, vars, train.x) "
            "with + - * / // % ** and min/max/int/round",
        },
    )


def _task(defs: _Defs) -> dict[str, Any]:
    forms: list[dict[str, Any]] = [{"enum": task_names(), "description": "a task by name"}]
    for name in task_names():
        params = defs.model(TASK_PARAMS[name])
        props = {"name": {"const": name}, **params.get("properties", {})}
        schema = {
            "type": "object",
            "description": " ".join((TASK_PARAMS[name].__doc__ or "").split()),
            "properties": props,
            "required": ["name", *params.get("required", [])],
            "additionalProperties": False,
        }
        forms.append(defs.add(f"task.{name}", schema))
    return {"description": "a task name or {name: task, ...its parameters}", "anyOf": forms}


def _train(defs: _Defs) -> dict[str, str]:
    schema = defs.model(TrainConfig)
    schema["properties"]["task"] = _task(defs)
    return defs.add("train", schema)


def _search(defs: _Defs) -> dict[str, str]:
    scalar = {"type": ["string", "number", "boolean", "null"]}
    num = {"int": {"type": "integer"}, "float": {"type": "number"}}
    domains: dict[str, Any] = {}
    for kind in KINDS:
        if kind == "choice":
            arg: dict[str, Any] = {"type": "array", "minItems": 1, "items": scalar}
        elif kind == "oneof":
            arg = {
                "anyOf": [
                    {"type": "array", "minItems": 1, "items": ref("search.value")},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": {"pattern": _ALT},
                        "additionalProperties": ref("search.value"),
                    },
                ]
            }
        else:
            arg = {"type": "array", "items": num[kind], "minItems": 2, "maxItems": 2}
        props: dict[str, Any] = {kind: arg}
        for mod in _MODIFIERS[kind]:
            props[mod] = (
                {"type": "boolean"} if mod == "log" else {**num[kind], "exclusiveMinimum": 0}
            )
        domains[kind] = {
            "type": "object",
            "properties": props,
            "required": [kind],
            "additionalProperties": False,
        }
    one_kind = {"oneOf": [{"required": [k]} for k in KINDS]}
    defs.add(
        "search.domain",
        {
            "description": "a searched value: " + ", ".join(f"{{{k}: ...}}" for k in KINDS),
            "type": "object",
            "anyOf": [defs.add(f"search.{k}", domains[k]) for k in KINDS],
        },
    )
    defs.add(
        "search.value",
        {
            "description": "a value that may hold search domains anywhere inside it",
            "anyOf": [
                {"type": "object", "allOf": [one_kind, ref("search.domain")]},
                {
                    "type": "object",
                    "not": one_kind,
                    "additionalProperties": ref("search.value"),
                },
                {"type": "array", "items": ref("search.value")},
                scalar,
            ],
        },
    )
    block = {
        "type": "object",
        "propertyNames": {"pattern": _PATH},
        "additionalProperties": ref("search.value"),
    }
    defs.add("search.block", block)
    constraints = {
        "type": "object",
        "properties": {k: {"type": "number", "exclusiveMinimum": 0} for k in CONSTRAINT_KEYS},
        "additionalProperties": False,
    }
    return defs.add(
        "search",
        {
            "description": "override paths -> values with domains (archc/search/space.py)",
            "type": "object",
            "propertyNames": {"pattern": _PATH},
            "properties": {
                "templates": {
                    "description": f"named alternative structures (the '{TEMPLATE}' parameter)",
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": _ALT},
                    "additionalProperties": ref("search.block"),
                },
                "constraints": constraints,
            },
            "additionalProperties": ref("search.value"),
        },
    )


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a YAML spec file."""
    defs = _Defs()
    _layers(defs)
    top = defs.model(_TopLevel)
    props = top["properties"]
    props["define"] = {
        "description": "named blocks of layers, used by name in layers and bodies",
        "type": "object",
        "propertyNames": {"pattern": _BLOCK_NAME, "not": {"enum": component_names()}},
        "additionalProperties": ref("body"),
    }
    props["layers"] = {**ref("layerList"), "description": "the model, layer by layer"}
    props["train"] = {**_train(defs), "description": "training settings (archc train)"}
    props["search"] = {**_search(defs), "description": "a search space (archc search)"}
    props["extends"] = {"type": "string", "description": "a base spec file this one overrides"}
    required = top.get("required", [])
    return {
        "$schema": DRAFT,
        "title": "archc spec",
        "description": "A YAML model spec for archc (check, compile, train, search).",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        # With `extends`, the base supplies what the child leaves out.
        "if": {"required": ["extends"]},
        "else": {"required": required},
        "$defs": _reachable(props, defs.defs),
    }


def _reachable(root: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The defs `root` refers to, directly or not (train's replaced TaskRef is dropped)."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and target.rsplit("/", 1)[-1] not in seen:
                name = target.rsplit("/", 1)[-1]
                seen.add(name)
                stack.append(defs[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return {k: defs[k] for k in sorted(seen)}


def render_schema() -> str:
    """The schema as JSON text (stable key order, trailing newline)."""
    return json.dumps(spec_schema(), indent=2) + "\n"
