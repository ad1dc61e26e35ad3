"""YAML frontend: safe loading into raw data with line:col marks for every key and value.

Specs are data: only the core YAML types are accepted (map, seq, str, int, float,
bool, null); any other tag (`!!python/object`, `!custom`) is an error, never run.
Nesting depth and the size after alias expansion are bounded, so alias bombs and
10,000-deep inputs end in a diagnostic in bounded time and memory.
"""

from __future__ import annotations

import re
from typing import Any

import yaml as pyyaml

from archc import knobs
from archc.diagnostics import Collector, SourceLoc, error, register_source
from archc.frontend.locs import LocMap, Path

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}

_OPEN = (
    pyyaml.BlockMappingStartToken,
    pyyaml.BlockSequenceStartToken,
    pyyaml.FlowMappingStartToken,
    pyyaml.FlowSequenceStartToken,
)
_CLOSE = (pyyaml.BlockEndToken, pyyaml.FlowMappingEndToken, pyyaml.FlowSequenceEndToken)


class _SpecLoader(pyyaml.SafeLoader):
    """SafeLoader that also reads `1e-5` (no dot) as a float, as users expect."""


_SpecLoader.yaml_implicit_resolvers = {
    k: list(v) for k, v in pyyaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    _CORE + "float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mark_loc(filename: str, mark: Any, end: Any = None) -> SourceLoc:
    end_col = end.column + 1 if end is not None and end.line == mark.line else None
    return SourceLoc(filename, mark.line + 1, mark.column + 1, end_col)


def _yaml_error(exc: pyyaml.YAMLError, filename: str) -> Exception:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    if context_mark is not None and mark is not None and "<stream end>" in str(exc):
        mark = context_mark  # an unclosed '{' / '[': show where it was opened
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    loc = _mark_loc(filename, mark) if mark is not None else SourceLoc(filename, 1, 1)
    return error(msg, loc)


def _check_depth(text: str, filename: str) -> None:
    """Reject over-deep nesting with the (non-recursive) scanner before composing."""
    limit = knobs.max_spec_depth()
    depth = 0
    try:
        for tok in pyyaml.scan(text, Loader=_SpecLoader):
            if isinstance(tok, _OPEN):
                depth += 1
                if depth > limit:
                    raise error(
                        f"spec nests deeper than {limit} levels",
                        _mark_loc(filename, tok.start_mark),
                        hint="raise ARCHC_MAX_SPEC_DEPTH if this is intended",
                    )
            elif isinstance(tok, _CLOSE):
                depth -= 1
    except pyyaml.YAMLError as exc:
        raise _yaml_error(exc, filename) from None


class _Converter:
    """Composed YAML nodes -> raw data + LocMap, checking tags, keys and expansion size."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.locs = LocMap()
        self.diags = Collector()
        self.count = 0
        self.limit = knobs.max_spec_nodes()
        self.constructor = pyyaml.constructor.SafeConstructor()

    def loc(self, node: Any) -> SourceLoc:
        return _mark_loc(self.filename, node.start_mark, node.end_mark)

    def convert(self, node: Any, path: Path) -> Any:
        self.count += 1
        if self.count > self.limit:
            raise error(
                f"spec expands to more than {self.limit} values (YAML aliases?)",
                self.loc(node),
                hint="raise ARCHC_MAX_SPEC_NODES if this is really a spec",
            )
        self.locs.set(path, self.loc(node))
        if isinstance(node, pyyaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, pyyaml.SequenceNode):
            if node.tag != _CORE + "seq":
                self.bad_tag(node)
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def bad_tag(self, node: Any) -> None:
        self.diags.error(
            f"YAML tag '{node.tag}' is not allowed: specs are data and cannot construct objects",
            self.loc(node),
        )

    def mapping(self, node: Any, path: Path) -> dict[str, Any]:
        if node.tag != _CORE + "map":
            self.bad_tag(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                self.diags.error(
                    "YAML merge keys ('<<') are not supported",
                    self.loc(key_node),
                    hint="use 'extends:' or 'define:' to share spec parts",
                )
                continue
            if not isinstance(key_node, pyyaml.ScalarNode):
                self.diags.error("mapping keys must be plain strings", self.loc(key_node))
                continue
            key = self.scalar(key_node)
            if key is None or isinstance(key, (bool, dict, list)):
                self.diags.error(
                    f"mapping key {key_node.value!r} must be a string", self.loc(key_node)
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                self.diags.error(f"duplicate key '{key}'", self.loc(key_node))
                continue
            self.locs.set((*path, key), None, self.loc(key_node))
            out[key] = self.convert(value_node, (*path, key))
        return out

    def scalar(self, node: Any) -> Any:
        if node.tag not in _SCALAR_TAGS:
            if node.tag == _CORE + "timestamp":
                return node.value  # a date-like string stays a string
            self.bad_tag(node)
            return node.value
        try:
            return self.constructor.construct_object(node, deep=False)
        except (pyyaml.YAMLError, ValueError, OverflowError):
            self.diags.error(f"cannot read scalar {node.value!r}", self.loc(node))
            return node.value


def load_yaml(text: str, filename: str) -> tuple[Any, LocMap]:
    """Parse YAML spec text into raw data and its LocMap, or raise a DiagnosticError."""
    register_source(filename, text)
    _check_depth(text, filename)
    try:
        docs = list(pyyaml.compose_all(text, Loader=_SpecLoader))
    except pyyaml.YAMLError as exc:
        raise _yaml_error(exc, filename) from None
    except RecursionError:
        raise error("spec nests too deeply to read", SourceLoc(filename, 1, 1)) from None
    docs = [d for d in docs if d is not None]
    if not docs:
        raise error(
            "spec is empty",
            SourceLoc(filename, 1, 1),
            hint="a spec needs at least 'model:', 'd_model:' and 'layers:'",
        )
    if len(docs) > 1:
        raise error(
            "a spec file holds one YAML document, found several",
            _mark_loc(filename, docs[1].start_mark),
        )
    conv = _Converter(filename)
    data = conv.convert(docs[0], ())
    conv.diags.raise_if_any()
    return data, conv.locs
