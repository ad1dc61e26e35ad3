"""The Spec: pydantic models of a resolved spec, and their construction from raw data.

`build_spec(data, locs)` validates resolved raw data (see locs.py) into a `Spec`,
reporting every problem at once with its source location. Layer items may be written
in several shorthands; they all become `Component` or `Ref` nodes here:

    "embed"                         -> Component(embed) with defaults (or Ref to a define)
    {norm: rms}                     -> Component(norm, kind=rms)   (primary parameter)
    {residual: [items]}             -> Component(residual, body=items)
    {loop: {steps: 2, body: [..]}}  -> Component(loop, steps=2, body=..)
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from archc.diagnostics import Collector, SourceLoc, did_you_mean
from archc.frontend.components import Params, component_names, get_component
from archc.frontend.locs import LocMap, Path, path_str
from archc.frontend.train import TrainConfig, build_train

_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_BLOCK_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Scalar = int | float | bool | str | None


class Node(BaseModel):
    """Base of spec nodes: frozen, unknown keys forbidden, a source location kept aside."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    loc: SourceLoc | None = Field(default=None, exclude=True, repr=False)


class Ref(Node):
    """A use of a block declared under `define`."""

    kind: Literal["ref"] = "ref"
    name: str


class Component(Node):
    """A registered component with validated parameters and an optional body."""

    kind: str
    params: SerializeAsAny[Params]
    body: tuple[Layer, ...] = ()
    param_locs: dict[str, SourceLoc] = Field(default_factory=dict, exclude=True, repr=False)

    def loc_of(self, param: str) -> SourceLoc | None:
        """Where `param` was written (falls back to the component's own location)."""
        return self.param_locs.get(param, self.loc)


Layer = Ref | Component
Component.model_rebuild()


class Spec(Node):
    """A resolved, validated spec (no `extends`, no `${...}` left)."""

    model: str = Field(pattern=_NAME)
    vocab: int | None = Field(default=None, gt=0)
    d_model: int = Field(gt=0)
    vars: dict[str, Scalar] = Field(default_factory=dict)
    define: dict[str, tuple[Layer, ...]] = Field(default_factory=dict)
    layers: tuple[Layer, ...]
    train: TrainConfig = Field(default_factory=TrainConfig)
    # The raw `search:` section (archc.search.space parses it), validated but kept as
    # data: a search spec is also a concrete spec, and compiles with its own values.
    search: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)
    source: str | None = Field(default=None, exclude=True, repr=False)
    # Where top-level and train keys were written ("vocab", "train.seq_len",
    # "train.task.n", ...), so run-time errors can point at the user's line.
    key_locs: dict[str, SourceLoc] = Field(default_factory=dict, exclude=True, repr=False)
    # The resolved raw data (after extends, overrides and ${...}): what a run records.
    raw: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)

    def semantic_dump(self) -> dict[str, Any]:
        """Plain data of the spec, for equality checks that ignore source locations."""
        return self.model_dump(mode="json")


class _TopLevel(BaseModel):
    """Top-level keys; layers and define are checked item by item afterwards."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(pattern=_NAME)
    vocab: int | None = Field(default=None, gt=0)
    d_model: int = Field(gt=0)
    vars: dict[str, Scalar] = Field(default_factory=dict)
    define: dict[str, Any] = Field(default_factory=dict)
    layers: list[Any]
    train: Any = None
    search: Any = None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def report_validation(
    exc: ValidationError,
    base: Path,
    locs: LocMap,
    diags: Collector,
    what: str,
    fields: list[str],
) -> None:
    """Turn pydantic errors into located diagnostics (unknown keys get "did you mean")."""
    errors = exc.errors()
    # A misspelt key already says "did you mean 'x'?"; don't also report 'x' as missing.
    explained = {
        did_you_mean(str(e["loc"][-1]), fields)
        for e in errors
        if e["type"] == "extra_forbidden" and e["loc"]
    }
    for err in errors:
        rel = tuple(err["loc"])
        if err["type"] == "missing" and f"did you mean '{rel[-1]}'?" in explained:
            continue
        path = (*base, *rel)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(rel[-1])
            diags.error(
                f"unknown key '{key}' in {what}",
                locs.key(path),
                hint=did_you_mean(key, fields) or f"known keys: {', '.join(fields)}",
            )
        elif kind == "missing":
            diags.error(f"missing required key '{rel[-1]}' in {what}", locs.value(path[:-1]))
        else:
            where = path_str(rel) or what
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            if isinstance(value, dict):
                # A rule about a whole mapping (e.g. "set exactly one of a or b"): point at
                # its key, and don't echo the mapping back.
                diags.error(f"{where}: {msg}", locs.key(path) or locs.value(path))
            else:
                diags.error(f"{where}: {msg} (got {_describe(value)})", locs.value(path))


class _SpecBuilder:
    def __init__(self, locs: LocMap, diags: Collector, defines: set[str]) -> None:
        self.locs = locs
        self.diags = diags
        self.defines = defines

    def unknown(self, name: str, loc: SourceLoc | None) -> None:
        hint = did_you_mean(name, [*component_names(), *self.defines])
        self.diags.error(f"unknown component or block '{name}'", loc, hint=hint)

    def items(self, raw: Any, path: Path) -> tuple[Layer, ...]:
        if not isinstance(raw, list):
            raw, path_of = [raw], (lambda i: path)  # a single item where a list is expected
        else:
            path_of = lambda i: (*path, i)  # noqa: E731
        out = []
        for i, item in enumerate(raw):
            layer = self.item(item, path_of(i))
            if layer is not None:
                out.append(layer)
        return tuple(out)

    def item(self, raw: Any, path: Path) -> Layer | None:
        loc = self.locs.value(path)
        if isinstance(raw, str):
            if raw in self.defines:
                return Ref(name=raw, loc=loc)
            if get_component(raw) is None:
                self.unknown(raw, loc)
                return None
            return self.component(raw, None, path, loc)
        if isinstance(raw, dict) and len(raw) == 1:
            ((name, value),) = raw.items()
            key_loc = self.locs.key((*path, name))
            if name in self.defines:
                self.diags.error(
                    f"block '{name}' takes no parameters", key_loc, hint=f"write just '{name}'"
                )
                return None
            if get_component(name) is None:
                self.unknown(name, key_loc)
                return None
            return self.component(name, value, (*path, name), key_loc)
        self.diags.error(
            f"a layer must be a name or a one-key mapping {{component: parameters}}, "
            f"got {_describe(raw)}",
            loc,
        )
        return None

    def component(self, name: str, value: Any, path: Path, loc: SourceLoc | None) -> Layer | None:
        cdef = get_component(name)
        assert cdef is not None
        body_raw: Any = None
        body_path = path
        if value is None:
            params: dict[str, Any] = {}
        elif isinstance(value, list):
            if not cdef.body:
                self.diags.error(f"'{name}' takes no body of layers", self.locs.value(path))
                return None
            params, body_raw = {}, value
        elif isinstance(value, dict):
            params = dict(value)
            key = "body"
            if cdef.body_alias in params and "body" not in params:
                key = cdef.body_alias  # the body under its other name (hier: inner)
            if key in params:
                if not cdef.body:
                    self.diags.error(
                        f"'{name}' takes no body of layers", self.locs.key((*path, "body"))
                    )
                    return None
                body_raw = params.pop(key)
                body_path = (*path, key)
        elif cdef.primary is not None:
            params = {cdef.primary: value}  # the scalar shorthand fills the primary param
        else:
            self.diags.error(
                f"'{name}' has no shorthand parameter; write {name}: {{...}}", self.locs.value(path)
            )
            return None
        if cdef.body and body_raw is None:
            self.diags.error(f"'{name}' needs a body of layers", loc)
            return None
        try:
            model = cdef.params.model_validate(params)
        except ValidationError as exc:
            fields = list(cdef.params.model_fields) + (["body"] if cdef.body else [])
            if not isinstance(value, dict):
                # Shorthand: the errors concern the scalar itself.
                for err in exc.errors():
                    msg = err["msg"].removeprefix("Value error, ")
                    self.diags.error(
                        f"{name} {cdef.primary}: {msg} (got {_describe(value)})",
                        self.locs.value(path),
                    )
            else:
                report_validation(exc, path, self.locs, self.diags, f"'{name}'", fields)
            return None
        body = self.items(body_raw, body_path) if body_raw is not None else ()
        if isinstance(value, dict):
            param_locs = {k: self.locs.value((*path, k)) for k in params}
            # Values inside mapping parameters too ("let.z"), so a builder can point
            # into them (a custom cell's expressions).
            for rel, rloc, is_key in self.locs.subtree(path):
                if not is_key and len(rel) == 2 and isinstance(value.get(rel[0]), dict):
                    param_locs[f"{rel[0]}.{rel[1]}"] = rloc
        else:
            param_locs = {cdef.primary: self.locs.value(path)} if cdef.primary else {}
        if cdef.body and body_raw is not None and not body and not self.diags:
            self.diags.error(f"'{name}' has an empty body", loc)
        return Component(
            kind=name,
            params=model,
            body=body,
            loc=loc,
            param_locs={k: v for k, v in param_locs.items() if v is not None},
        )


def _check_define_cycles(spec_defines: dict[str, tuple[Layer, ...]], diags: Collector) -> None:
    """A define that (indirectly) uses itself is an error at the reference that closes it."""
    state: dict[str, int] = {}

    def refs(layers: tuple[Layer, ...]) -> list[Ref]:
        out: list[Ref] = []
        stack = list(layers)
        while stack:
            layer = stack.pop()
            if isinstance(layer, Ref):
                out.append(layer)
            else:
                stack.extend(layer.body)
        return out

    def visit(name: str, chain: list[str]) -> None:
        state[name] = 1
        for ref in refs(spec_defines[name]):
            if state.get(ref.name) == 1:
                cycle = " -> ".join([*chain[chain.index(ref.name) :], ref.name])
                diags.error(f"recursive define: {cycle}", ref.loc)
            elif state.get(ref.name) is None and ref.name in spec_defines:
                visit(ref.name, [*chain, ref.name])
        state[name] = 2

    for name in spec_defines:
        if name not in state:
            visit(name, [name])


def build_spec(data: Any, locs: LocMap, source: str | None = None) -> Spec:
    """Validate resolved raw data into a Spec; raise DiagnosticError with all problems."""
    diags = Collector()
    if not isinstance(data, dict):
        diags.error(f"a spec must be a mapping of keys, got {_describe(data)}", locs.value(()))
        diags.raise_if_any()
    fields = list(_TopLevel.model_fields)
    try:
        top = _TopLevel.model_validate(data)
    except ValidationError as exc:
        report_validation(exc, (), locs, diags, "the spec", fields)
        top = None
    raw_define = data.get("define") if isinstance(data.get("define"), dict) else {}
    defines = set(raw_define)
    for name in defines:
        if not re.match(_BLOCK_NAME, name):
            diags.error(
                f"block name '{name}' is not a valid name (letters, digits, '_')",
                locs.key(("define", name)),
            )
        elif get_component(name) is not None:
            diags.error(
                f"block name '{name}' shadows the built-in component '{name}'",
                locs.key(("define", name)),
            )
    builder = _SpecBuilder(locs, diags, defines)
    define = {name: builder.items(raw, ("define", name)) for name, raw in raw_define.items()}
    layers = (
        builder.items(data.get("layers"), ("layers",))
        if isinstance(data.get("layers"), list)
        else ()
    )
    _check_define_cycles(define, diags)
    train, train_locs = build_train(data.get("train"), locs, diags)
    if data.get("search") is not None and not diags:
        from archc.search.space import check_space  # no torch, no optuna

        check_space(data, locs, diags)
    diags.raise_if_any()
    assert top is not None and train is not None
    return Spec(
        model=top.model,
        vocab=top.vocab,
        d_model=top.d_model,
        vars=top.vars,
        define=define,
        layers=layers,
        train=train,
        search=data.get("search"),
        loc=locs.value(()),
        source=source,
        key_locs={
            **{k: loc for k in data if isinstance(k, str) and (loc := locs.value((k,)))},
            **train_locs,
        },
        raw=data,
    )
