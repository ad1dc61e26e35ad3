"""Canonical text for raw spec data: `to_dsl`, `to_yaml` and layer-item normalisation.

Both writers take the *unresolved* raw data (``${...}`` strings, `define`, `extends`
kept as they are) and print it so that the matching frontend reads back exactly the
same data: ``parse_dsl(to_dsl(d))[0] == d`` and ``load_yaml(to_yaml(d))[0] == d``.
Anything the DSL's structured forms cannot say (a layer list holding a number, an
empty `vars`, ...) falls back to a ``KEY = VALUE`` line, which holds any value.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import yaml as pyyaml

from archc.frontend.components import primary_param

_WIDTH = 80
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)\(-?[0-9]+\)\Z")
_INTERP = re.compile(r"\$\{[^}\x00-\x1f\x7f\x85\u2028\u2029]*\}\Z")
_KEYWORDS = frozenset({"true", "false", "null", "model", "def", "let"})
_STRUCTURED = ("vars", "define", "layers")
# Characters json.dumps leaves raw that would break lines or the UTF-8 encoding.
_ESCAPE = re.compile("[\x7f\x85\u2028\u2029\ud800-\udfff]")


# ---------------------------------------------------------------- layer items


def normalize_layer_item(item: Any) -> Any:
    """A layer item in long form: ``{kind: {params..., "body": [items]}}``.

    ``"embed"`` stays a string; ``{norm: rms}`` becomes ``{norm: {kind: rms}}`` (via
    `primary_param`), ``{norm: null}`` becomes ``{norm: {}}``, ``{residual: [..]}``
    becomes ``{residual: {body: [..]}}``; bodies are normalised recursively. Anything
    that is not a layer item (a number, a map with several keys) is returned as is.
    """
    if not _is_item(item) or isinstance(item, str):
        return item
    ((name, value),) = item.items()
    if value is None:
        return {name: {}}
    if isinstance(value, list):
        return {name: {"body": [normalize_layer_item(i) for i in value]}}
    if isinstance(value, dict):
        out = dict(value)
        if isinstance(out.get("body"), list):
            out["body"] = [normalize_layer_item(i) for i in out["body"]]
        return {name: out}
    prim = primary_param(name)
    return {name: {prim: value}} if prim is not None else {name: value}


def _is_item(x: Any) -> bool:
    """True for what the DSL writes as a layer item: a string or a one-key map."""
    if isinstance(x, str):
        return True
    return isinstance(x, dict) and len(x) == 1 and isinstance(next(iter(x)), str)


def _is_body(x: Any) -> bool:
    return isinstance(x, list) and all(_is_item(i) for i in x)


# ---------------------------------------------------------------- DSL


def _numberish(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _quote(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def _dsl_name(s: str) -> str:
    """A name (key, model name, item kind) bare if the lexer reads it as NAME."""
    if _NAME.match(s) and s not in _KEYWORDS and not _numberish(s):
        return s
    return _quote(s)


def _dsl_str(s: str) -> str:
    """A string value: bare as a NAME, ``${...}`` or ``cycle(2)``, else quoted."""
    m = _CALL.match(s)
    if (m and m.group(1) not in _KEYWORDS) or _INTERP.match(s):
        return s
    return _dsl_name(s)


def _dsl_key(k: Any) -> str:
    if not isinstance(k, str):
        raise ValueError(f"mapping keys must be strings, got {k!r}")
    return _dsl_name(k)


def _float(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"cannot write {v!r}: specs hold finite numbers only")
    return repr(float(v))


def _dsl_value(v: Any, indent: int) -> str:
    """A value in DSL syntax; long lists/maps break over lines indented from `indent`."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, str):
        return _dsl_str(v)
    if isinstance(v, list):
        parts = [_dsl_value(x, indent + 2) for x in v]
        return _wrap("[", "]", parts, indent)
    if isinstance(v, dict):
        parts = [f"{_dsl_key(k)}: {_dsl_value(x, indent + 2)}" for k, x in v.items()]
        return _wrap("{", "}", parts, indent)
    raise ValueError(f"cannot write a {type(v).__name__} in a spec")


def _wrap(open_: str, close: str, parts: list[str], indent: int, lead: int = 0) -> str:
    """`open a, b close` on one line if short (after `lead` more chars), else one per line."""
    one = open_ + ", ".join(parts) + close
    if not parts or (indent + lead + len(one) <= _WIDTH and "\n" not in one):
        return one
    pad = " " * (indent + 2)
    return open_ + "\n" + "".join(f"{pad}{p},\n" for p in parts) + " " * indent + close


def _item_head(item: Any, indent: int) -> tuple[str, list[Any] | None]:
    """The text of a layer item up to its body, and the body (None if it has none)."""
    if isinstance(item, str):
        return _dsl_name(item), None
    ((name, value),) = item.items()
    head = _dsl_name(name)
    if _is_body(value):
        return head, value
    if not isinstance(value, dict):
        return f"{head}({_dsl_value(value, indent)})", None
    body = value.get("body")
    body = body if _is_body(body) else None
    args = [
        f"{_dsl_key(k)}={_dsl_value(x, indent + 2)}"
        for k, x in value.items()
        if not (k == "body" and body is not None)
    ]
    return head + _wrap("(", ")", args, indent, len(head)), body


def _items(items: list[Any], indent: int) -> list[str]:
    out: list[str] = []
    for item in items:
        head, body = _item_head(item, indent)
        out += (
            _braced(" " * indent + head, body, indent)
            if body is not None
            else [" " * indent + head]
        )
    return out


def _braced(head: str, body: list[Any], indent: int) -> list[str]:
    """`head { items }`: on one line when the body is short and flat."""
    if not body:
        return [head + " {}"]
    if len(body) <= 3:
        heads = [_item_head(i, 0) for i in body]
        line = f"{head} {{ {'; '.join(h for h, _ in heads)} }}"
        if all(b is None for _, b in heads) and len(line) <= _WIDTH and "\n" not in line:
            return [line]
    return [head + " {", *_items(body, indent + 2), " " * indent + "}"]


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, (dict, list))


def to_dsl(data: Any) -> str:
    """Raw spec data as canonical archc DSL text (raises ValueError for inf/nan)."""
    if not isinstance(data, dict):
        raise ValueError("a DSL spec is a mapping at the top level")
    head = "model"
    name = data.get("model")
    if isinstance(name, str):
        head += " " + _dsl_name(name)
    args: list[str] = []
    settings: list[str] = []
    for k, v in data.items():
        if (k == "model" and isinstance(name, str)) or k in _STRUCTURED:
            continue
        if _is_scalar(v) and _dsl_key(k) == k and k != "model":
            args.append(f"{k}={_dsl_value(v, 2)}")
        else:
            settings.append(f"{_dsl_key(k)} = {_dsl_value(v, 2)}")
    lets: list[str] = []
    var_table = data.get("vars")
    if isinstance(var_table, dict) and var_table and all(_dsl_name(k) == k for k in var_table):
        lets = [f"let {k} = {_dsl_value(v, 2)}" for k, v in var_table.items()]
    elif "vars" in data:
        settings.append(f"vars = {_dsl_value(var_table, 2)}")
    defs: list[str] = []
    blocks = data.get("define")
    if (
        isinstance(blocks, dict)
        and blocks
        and all(_dsl_name(k) == k and _is_body(v) for k, v in blocks.items())
    ):
        for k, v in blocks.items():
            defs += _braced(f"  def {k}", v, 2)
    elif "define" in data:
        settings.append(f"define = {_dsl_value(blocks, 2)}")
    layers = data.get("layers")
    items: list[str] = []
    if _is_body(layers) and (layers or not (settings or lets or defs)):
        items = _items(layers, 2)
    elif "layers" in data:
        settings.append(f"layers = {_dsl_value(layers, 2)}")
    if args:
        head += _wrap("(", ")", args, 0, len(head) + 2)
    sections = [["  " + s for s in settings], ["  " + s for s in lets], defs, items]
    body = "\n\n".join("\n".join(s) for s in sections if s)
    if body:
        return f"{head} {{\n{body}\n}}\n"
    return head + " {}\n" if "layers" in data else head + "\n"


# ---------------------------------------------------------------- YAML

_RESOLVER = pyyaml.resolver.Resolver()
_EMITTER = pyyaml.emitter.Emitter(io.StringIO(), allow_unicode=True)
_STR_TAG = "tag:yaml.org,2002:str"
# The YAML frontend reads `1e-5` (no dot) as a float; quote anything number-like.
_NUMBERISH = re.compile(r"[-+]?\.?[0-9]")
_YAML_WIDTH = 100


def _yaml_str(s: str, flow: bool) -> str:
    """A YAML string: plain when that reads back as the same string, else double-quoted."""
    if s and len(s) < 200 and not _NUMBERISH.match(s):
        info = _EMITTER.analyze_scalar(s)
        plain = info.allow_flow_plain if flow else info.allow_block_plain
        if (
            plain
            and not info.multiline
            and _RESOLVER.resolve(pyyaml.ScalarNode, s, (True, False)) == _STR_TAG
        ):
            return s
    out = pyyaml.safe_dump(s, default_style='"', allow_unicode=True, width=1 << 30)
    return out.rstrip("\n")


def _yaml_scalar(v: Any, flow: bool) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(float(v))
    if isinstance(v, str):
        return _yaml_str(v, flow)
    raise ValueError(f"cannot write a {type(v).__name__} in a spec")


def _yaml_key(k: Any, flow: bool) -> str:
    if not isinstance(k, str):
        raise ValueError(f"mapping keys must be strings, got {k!r}")
    return _yaml_str(k, flow)


def _yaml_flow(v: Any) -> str | None:
    """Flow text for a scalar, an empty container or a flat one; None if nested."""
    if isinstance(v, dict):
        if not all(_is_scalar(x) for x in v.values()):
            return None
        parts = [f"{_yaml_key(k, True)}: {_yaml_scalar(x, True)}" for k, x in v.items()]
        return "{" + ", ".join(parts) + "}"
    if isinstance(v, list):
        if not all(_is_scalar(x) for x in v):
            return None
        return "[" + ", ".join(_yaml_scalar(x, True) for x in v) + "]"
    return _yaml_scalar(v, False)


# How each container is laid out: "layers" lists hold layer items, "item" maps are one
# layer item, "params" the map of an item's parameters, "define" the named blocks,
# "section" a top-level map (train:, vars:); all but "params" and "data" stay in block style.
def _child_ctx(ctx: str, key: Any, value: Any) -> str:
    if ctx == "top":
        return (
            key if key in ("layers", "define") else "section" if isinstance(value, dict) else "data"
        )
    if ctx == "define" or (ctx == "item" and isinstance(value, list)):
        return "layers"
    if ctx == "layers" and _is_item(value):
        return "item"
    if ctx == "item":
        return "params"
    if ctx == "params" and key == "body":
        return "layers"
    return "data"


def _yaml_block(v: Any, indent: int, ctx: str) -> list[str]:
    """Lines of a non-empty dict or list in block style (flat parts in flow style)."""
    pad = " " * indent
    lines: list[str] = []
    entries = v.items() if isinstance(v, dict) else ((None, x) for x in v)
    for k, x in entries:
        sub = _child_ctx(ctx, k, x)
        lead = f"{pad}{_yaml_key(k, False)}:" if isinstance(v, dict) else f"{pad}-"
        flow = None
        if _is_scalar(x) or not x:
            flow = _yaml_flow(x)
        elif sub not in ("layers", "item", "define", "section"):
            flow = _yaml_flow(x)
        if flow is not None and (len(lead) + 1 + len(flow) <= _YAML_WIDTH or _is_scalar(x)):
            lines.append(f"{lead} {flow}")
        elif isinstance(v, dict):
            lines.append(lead)
            lines += _yaml_block(x, indent + 2, sub)
        else:
            inner = _yaml_block(x, indent + 2, sub)
            lines += [f"{lead} {inner[0][indent + 2 :]}", *inner[1:]]
    return lines


def to_yaml(data: Any) -> str:
    """Raw spec data as canonical block-style YAML that `load_yaml` reads back equal."""
    if isinstance(data, (dict, list)) and data:
        return "\n".join(_yaml_block(data, 0, "top" if isinstance(data, dict) else "data")) + "\n"
    flow = _yaml_flow(data) if isinstance(data, (dict, list)) else _yaml_scalar(data, False)
    return f"{flow}\n"
