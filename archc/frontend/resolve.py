"""From spec text to a validated Spec: `extends`, command-line overrides, `${...}`.

Order: parse -> merge `extends` bases (child wins, maps merge deeply, lists replace)
-> apply overrides (`d_model=256`, `layers[2].attention.heads=8`) -> evaluate `${...}`
-> validate (schema.build_spec). Every step keeps the LocMap in step with the data.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path as FsPath
from typing import Any

from archc.diagnostics import (
    Collector,
    DiagnosticError,
    SourceLoc,
    did_you_mean,
    error,
    register_source,
)
from archc.frontend.components import primary_param
from archc.frontend.interp import InterpError, has_reference, interpolate
from archc.frontend.locs import LocMap, Path, path_str
from archc.frontend.schema import Spec, build_spec
from archc.frontend.source import read_spec_file, spec_format


def parse_text(text: str, filename: str) -> tuple[Any, LocMap]:
    """Raw data of spec text in either format (chosen by file name, else by content)."""
    if spec_format(filename, text) == "dsl":
        from archc.frontend.dsl import parse_dsl

        return parse_dsl(text, filename)
    from archc.frontend.yaml import load_yaml

    return load_yaml(text, filename)


def _merge(
    base: Any, child: Any, base_locs: LocMap, child_locs: LocMap, path: Path, out_locs: LocMap
) -> Any:
    """Deep-merge child over base, recording where each resulting value came from."""
    if isinstance(base, dict) and isinstance(child, dict):
        out = {}
        for key in [*base, *[k for k in child if k not in base]]:
            p = (*path, key)
            if key in child and key in base:
                out[key] = _merge(base[key], child[key], base_locs, child_locs, p, out_locs)
                out_locs.keys[p] = child_locs.keys.get(p) or base_locs.keys.get(p)
            elif key in child:
                out[key] = child[key]
                out_locs.graft(p, child_locs, p)
            else:
                out[key] = base[key]
                out_locs.graft(p, base_locs, p)
        out_locs.set(path, child_locs.values.get(path) or base_locs.values.get(path))
        return out
    out_locs.graft(path, child_locs, path)
    return child


def load_raw(
    source: str | FsPath, text: str | None = None, _chain: tuple[str, ...] = ()
) -> tuple[Any, LocMap]:
    """Raw data of a spec with its `extends` chain merged in."""
    name = str(source)
    if text is None:
        text = read_spec_file(source)
    else:
        register_source(name, text)
    data, locs = parse_text(text, name)
    if not isinstance(data, dict) or "extends" not in data:
        return data, locs
    ext = data.pop("extends")
    ext_loc = locs.value(("extends",))
    if not isinstance(ext, str):
        raise error("'extends' must be a file path string", ext_loc)
    base_path = (FsPath(name).parent / ext) if not FsPath(ext).is_absolute() else FsPath(ext)
    key = str(base_path.resolve())
    here = str(FsPath(name).resolve())
    if key in (*_chain, here):
        cycle = " -> ".join([FsPath(p).name for p in (*_chain, here)] + [FsPath(key).name])
        raise error(f"recursive extends: {cycle}", ext_loc)
    if not base_path.exists():
        raise error(f"extends: no such spec file '{ext}'", ext_loc)
    try:
        base, base_locs = load_raw(base_path, None, (*_chain, here))
    except DiagnosticError as exc:
        exc.diagnostics.append(
            type(exc.diagnostics[0])("in the spec extended here", ext_loc, severity="note")
        )
        raise
    if not isinstance(base, dict):
        raise error(f"extends: '{ext}' is not a mapping spec", ext_loc)
    merged_locs = LocMap()
    merged = _merge(base, data, base_locs, locs, (), merged_locs)
    return merged, merged_locs


_OVERRIDE = re.compile(
    r"^\s*([A-Za-z_][\w\-]*(?:\[\d+\]|\.[A-Za-z_][\w\-]*|\.\d+)*)\s*=(.*)$", re.S
)
_PART = re.compile(r"\[(\d+)\]|\.?([A-Za-z_][\w\-]*)|\.(\d+)")


def parse_override(text: str, index: int) -> tuple[Path, Any, LocMap, SourceLoc]:
    """`layers[2].attention.heads=8` -> (path, value, value locs, loc of the path)."""
    fname = f"<override {index + 1}>"
    register_source(fname, text)
    m = _OVERRIDE.match(text)
    if not m:
        raise error(
            f"override '{text}' is not of the form path=value",
            SourceLoc(fname, 1, 1, len(text) + 1),
            hint="e.g. d_model=256 or layers[2].attention.heads=8",
        )
    path: list[str | int] = []
    for pm in _PART.finditer(m.group(1)):
        idx = pm.group(1) or pm.group(3)
        path.append(int(idx) if idx is not None else pm.group(2))
    from archc.frontend.yaml import load_yaml

    raw_value = m.group(2).strip()
    value_col = m.start(2) + 1 + (len(m.group(2)) - len(m.group(2).lstrip()))
    if raw_value == "":
        value, vlocs = None, LocMap()
    else:
        # Parse the value as YAML, then shift its columns to where it sits in the override.
        try:
            value, vlocs = load_yaml(raw_value, fname + ":value")
        except DiagnosticError as exc:
            raise DiagnosticError(
                [
                    replace(d, loc=SourceLoc(fname, 1, d.loc.col + value_col - 1))
                    if d.loc is not None
                    else d
                    for d in exc.diagnostics
                ]
            ) from None
        shifted = LocMap()
        for table, dst in ((vlocs.values, shifted.values), (vlocs.keys, shifted.keys)):
            for p, loc in table.items():
                end = loc.end_col + value_col - 1 if loc.end_col else None
                dst[p] = SourceLoc(fname, 1, loc.col + value_col - 1, end)
        vlocs = shifted
    return tuple(path), value, vlocs, SourceLoc(fname, 1, m.start(1) + 1, m.end(1) + 1)


def _expand_layer_shorthand(container: Any, key: str | int) -> None:
    """Rewrite a layer item `attention` / `{norm: rms}` into `{kind: {param: ...}}` form."""
    item = container[key]
    if isinstance(item, str):
        container[key] = {item: {}}
    elif isinstance(item, dict) and len(item) == 1:
        ((kind, value),) = item.items()
        if value is None:
            item[kind] = {}
        elif not isinstance(value, (dict, list)) and primary_param(kind) is not None:
            item[kind] = {primary_param(kind): value}


def _is_layer_list(path: Path) -> bool:
    """Whether the list at `path` holds layer items (layers, a define, or a body)."""
    return bool(path) and (
        path == ("layers",)
        or path[0] == "define"
        or path[-1] == "body"
        or (len(path) >= 3 and isinstance(path[-2], int))
    )


def apply_override(data: Any, locs: LocMap, override: str, index: int) -> None:
    """Set the value an override names, creating missing mapping keys on the way."""
    path, value, vlocs, loc = parse_override(override, index)
    assign_path(data, locs, path, value, vlocs, loc)


def parse_path(text: str) -> Path | None:
    """`layers[2].attention.heads` (or `layers.2.attention.heads`) as a data path."""
    m = _OVERRIDE.match(text + "=")
    if not m:
        return None
    path: list[str | int] = []
    for pm in _PART.finditer(m.group(1)):
        idx = pm.group(1) or pm.group(3)
        path.append(int(idx) if idx is not None else pm.group(2))
    return tuple(path)


def assign_path(
    data: Any, locs: LocMap, path: Path, value: Any, vlocs: LocMap, loc: SourceLoc | None
) -> None:
    """Set `value` (located by `vlocs`) at `path`, as an override does; `loc` names errors."""
    node = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not 0 <= part < len(node):
                raise error(f"override path {path_str(path[: depth + 1])} does not exist", loc)
            if isinstance(nxt, str):
                _expand_layer_shorthand(node, part)
        else:
            if not isinstance(node, dict):
                raise error(f"override path {path_str(path[: depth + 1])} is not a mapping", loc)
            if (
                depth > 0
                and isinstance(path[depth - 1], int)
                and len(node) == 1
                and part not in node
                and _is_layer_list(path[: depth - 1])
            ):
                (kind,) = node
                raise error(
                    f"{path_str(path[:depth])} is '{kind}', not '{part}'",
                    loc,
                    hint=f"write {path_str((*path[:depth], kind))}...",
                )
            if part not in node or node[part] is None:
                node[part] = {} if isinstance(nxt, str) else []
                locs.set((*path[: depth + 1],), loc, loc)
            elif tuple(path[: depth + 1]) == ("train", "task") and isinstance(node[part], str):
                node[part] = {"name": node[part]}  # `task: parity` addressed as train.task.n
            elif isinstance(nxt, str) and isinstance(node[part], (str, int, float, bool)):
                # `attention: 4` shorthand addressed as attention.heads: expand it first.
                kind = part
                pp = primary_param(kind)
                if pp is None:
                    raise error(f"override path {path_str(path[: depth + 1])} is a scalar", loc)
                node[part] = {pp: node[part]}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not 0 <= last < len(node):
            raise error(f"override path {path_str(path)} does not exist", loc)
    elif not isinstance(node, dict):
        raise error(f"override path {path_str(path[:-1])} is not a mapping", loc)
    node[last] = value
    locs.drop(path)
    locs.graft(path, vlocs, ())
    locs.set(path, vlocs.value(()) or loc, loc)


def _resolve_references(data: Any, locs: LocMap) -> Any:
    """Evaluate every `${...}` string (vars may use each other; cycles are errors)."""
    diags = Collector()
    top = data if isinstance(data, dict) else {}
    busy: set[str] = set()

    def lookup(name: str) -> Any:
        parts = name.split(".")
        if parts[0] in top.get("vars", {}) if isinstance(top.get("vars"), dict) else False:
            parts = ["vars", *parts]
        node: Any = top
        for part in parts:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                names = [k for k in top if not isinstance(top[k], (dict, list))]
                if isinstance(top.get("vars"), dict):
                    names += list(top["vars"])
                hint = did_you_mean(name, names)
                raise InterpError(
                    f"unknown name '{name}' in ${{...}}" + (f" ({hint})" if hint else "")
                )
        if has_reference(node):
            if name in busy:
                raise InterpError(f"'{name}' refers to itself")
            busy.add(name)
            try:
                node = interpolate(node, lookup)
            finally:
                busy.discard(name)
        if isinstance(node, (dict, list)):
            raise InterpError(f"'{name}' is not a single value")
        return node

    def walk(node: Any, path: Path) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, (*path, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*path, i)) for i, v in enumerate(node)]
        if has_reference(node):
            try:
                return interpolate(node, lookup)
            except InterpError as exc:
                diags.error(str(exc), locs.value(path))
            except RecursionError:
                diags.error("references nest too deeply", locs.value(path))
        return node

    out = walk(data, ())
    diags.raise_if_any()
    return out


def load_spec(
    source: str | FsPath, overrides: list[str] | tuple[str, ...] = (), text: str | None = None
) -> Spec:
    """Parse, merge, override, interpolate and validate a spec (file path, or `text`)."""
    data, locs = load_raw(source, text)
    if overrides:
        data = copy.deepcopy(data)
        if not isinstance(data, dict):
            raise error("overrides need a mapping spec", locs.value(()))
        for i, ov in enumerate(overrides):
            apply_override(data, locs, ov, i)
    data = _resolve_references(data, locs)
    return build_spec(data, locs, source=str(source))
