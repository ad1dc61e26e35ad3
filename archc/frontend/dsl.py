"""DSL frontend: `.arch` text -> the same raw data and LocMap as the YAML frontend.

The grammar lives in grammar/archc.lark (package data of `archc.grammar`) and is parsed
with lark's LALR parser, which never recurses. Nesting depth is bounded by a bracket
scan before parsing, so the (recursive) tree -> data conversion stays shallow and a
10,000-deep input ends in a diagnostic at once. Layer items map to data as follows:

    NAME                -> "NAME"
    NAME(v)             -> {NAME: v}
    NAME()              -> {NAME: {}}
    NAME(k=v)           -> {NAME: {k: v}}
    NAME(v, k=w)        -> {NAME: {primary: v, k: w}}     (primary = primary_param(NAME))
    NAME { items }      -> {NAME: [items]}
    NAME(args) { items} -> {NAME: {...args, "body": [items]}}
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from typing import Any

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from archc import knobs
from archc.diagnostics import (
    Collector,
    Diagnostic,
    DiagnosticError,
    SourceLoc,
    did_you_mean,
    error,
    register_source,
)
from archc.frontend.components import component_names, get_component, primary_param
from archc.frontend.locs import LocMap, Path

_PARSER: lark.Lark | None = None

# Significant characters for the bracket scan; strings, comments and ${...} are skipped.
_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|\$\{[^}\n]*\}|[{}()\[\]\n]')
_OPEN_OF = {")": "(", "]": "[", "}": "{"}
_CLOSE_OF = {v: k for k, v in _OPEN_OF.items()}
_MAX_SYNTAX_ERRORS = 20


def _parser() -> lark.Lark:
    """The (cached) LALR parser built from grammar/archc.lark."""
    global _PARSER
    if _PARSER is None:
        grammar = importlib.resources.files("archc.grammar").joinpath("archc.lark").read_text()
        _PARSER = lark.Lark(
            grammar, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True
        )
    return _PARSER


def _check_brackets(text: str, filename: str) -> None:
    """Bound nesting depth and report unbalanced brackets before parsing."""
    limit = knobs.max_spec_depth()
    stack: list[tuple[str, int, int]] = []
    line, line_start = 1, 0
    for m in _SCAN.finditer(text):
        ch = m.group()
        if ch == "\n":
            line, line_start = line + 1, m.end()
            continue
        col = m.start() - line_start + 1
        if ch in _CLOSE_OF:
            stack.append((ch, line, col))
            if len(stack) > limit:
                raise error(
                    f"spec nests deeper than {limit} levels",
                    SourceLoc(filename, line, col, col + 1),
                    hint="raise ARCHC_MAX_SPEC_DEPTH if this is intended",
                )
        elif ch in _OPEN_OF:
            if stack and stack[-1][0] == _OPEN_OF[ch]:
                stack.pop()
            elif any(o == _OPEN_OF[ch] for o, _, _ in stack):
                o, ol, oc = stack[-1]
                raise error(
                    f"unclosed '{o}': found '{ch}' at {line}:{col} before its '{_CLOSE_OF[o]}'",
                    SourceLoc(filename, ol, oc, oc + 1),
                )
            else:
                raise error(f"unmatched '{ch}'", SourceLoc(filename, line, col, col + 1))
    if stack:
        o, ol, oc = stack[-1]
        raise error(
            f"unclosed '{o}': expected '{_CLOSE_OF[o]}' before the end of the file",
            SourceLoc(filename, ol, oc, oc + 1),
        )


# ---------------------------------------------------------------- syntax errors

_VALUE_TERMS = frozenset("INT FLOAT STRING NAME INTERP TRUE FALSE NULL LSQB LBRACE".split())
_KEYWORDS = frozenset("MODEL DEF LET TRUE FALSE NULL".split())
_PUNCT = {
    "LPAR": "(",
    "RPAR": ")",
    "LBRACE": "{",
    "RBRACE": "}",
    "LSQB": "[",
    "RSQB": "]",
    "EQUAL": "=",
    "COLON": ":",
    "COMMA": ",",
    "SEMICOLON": ";",
}
_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "an integer",
    "FLOAT": "a number",
    "INTERP": "an interpolation",
    "$END": "the end of the file",
    "MODEL": "'model'",
    "DEF": "'def'",
    "LET": "'let'",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "NULL": "'null'",
}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe_expected(expected: set[str]) -> str:
    """Lark's expected terminal names as 'a layer, 'def' or 'let'' style English."""
    exp = {e for e in expected if e in _PUNCT or e in _WORDS or e == "_NL"}
    in_body = "SEMICOLON" in exp
    words: list[str] = []
    if in_body and "NAME" in exp:
        words.append("a layer")
        words += [_WORDS[k] for k in ("DEF", "LET") if k in exp]
        exp -= {"NAME", "STRING", "DEF", "LET"}
    elif "INT" in exp and "LSQB" in exp:
        words.append("a value")
        exp -= _VALUE_TERMS | _KEYWORDS
    elif "NAME" in exp:
        words.append("a name")
        exp -= {"NAME", "STRING"} | _KEYWORDS
    for term in ("LPAR", "LBRACE", "LSQB", "EQUAL", "COLON", "COMMA"):
        if term in exp:
            words.append(f"'{_PUNCT[term]}'")
    if in_body:
        words.append("';'")
    for term in ("RPAR", "RSQB", "RBRACE"):
        if term in exp:
            words.append(f"'{_PUNCT[term]}'")
    words += [_WORDS[t] for t in sorted(exp) if t in _WORDS and _WORDS[t] not in words]
    if "_NL" in exp and (in_body or not words):
        words.append("a newline")
    return _join(words) if words else "something else"


def _describe_token(tok: lark.Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "newline"
    text = str(tok)
    return repr(text[:40] + "...") if len(text) > 40 else f"'{text}'"


def _syntax_diag(exc: UnexpectedInput, filename: str, text: str) -> Diagnostic:
    """A readable diagnostic for one lark error (no lark internals)."""
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            if "MODEL" in exc.expected:
                return Diagnostic(
                    "spec is empty",
                    SourceLoc(filename, 1, 1),
                    hint="a DSL spec starts with 'model NAME {'",
                )
            line = text.count("\n", 0, len(text.rstrip())) + 1
            col = len(text.rstrip()) - (text.rfind("\n", 0, len(text.rstrip())) + 1) + 1
            loc = SourceLoc(filename, line, col)
        elif tok.type == "_NL":
            loc = SourceLoc(filename, tok.line, tok.column, tok.column + 1)
        else:
            end = tok.end_column if tok.end_line == tok.line else None
            loc = SourceLoc(filename, tok.line, tok.column, end)
        expected = set(exc.expected)
        if exc.interactive_parser is not None:
            expected = set(exc.interactive_parser.accepts())
        msg = f"unexpected {_describe_token(tok)}; expected {_describe_expected(expected)}"
        hint = None
        if tok.type in ("DEF", "LET") and "LET" not in expected:
            hint = "'def' and 'let' are allowed only directly in the model body"
        elif tok.type in _KEYWORDS and "NAME" in expected:
            hint = f"'{tok}' is a keyword; write \"{tok}\" to use it as a name"
        return Diagnostic(msg, loc, hint=hint)
    assert isinstance(exc, UnexpectedCharacters)
    loc = SourceLoc(filename, exc.line, exc.column, exc.column + 1)
    ch = exc.char
    if ch == '"':
        return Diagnostic(
            "unterminated string or invalid escape in string",
            loc,
            hint="strings are double-quoted on one line, with JSON escapes",
        )
    if ch == "$":
        return Diagnostic("'$' must start an interpolation '${...}' on one line", loc)
    return Diagnostic(f"unexpected character {ch!r}", loc)


def _parse_tree(text: str, filename: str) -> lark.Tree:
    """Parse with lark, collecting several syntax errors through its error recovery.

    Lark recovers by dropping the offending token. An error raised while the parser is
    still inside the statement of the previous error (its value stack still starts with
    the same objects) is a cascade of that error and is not reported.
    """
    diags: list[Diagnostic] = []
    prev_stack: list[Any] | None = None

    def on_error(exc: UnexpectedInput) -> bool:
        nonlocal prev_stack
        ip = getattr(exc, "interactive_parser", None)
        stack = list(ip.parser_state.value_stack) if ip is not None else []
        cascade = (
            prev_stack is not None
            and len(prev_stack) <= len(stack)
            and all(a is b for a, b in zip(prev_stack, stack[: len(prev_stack)], strict=True))
        )
        if not cascade:
            diags.append(_syntax_diag(exc, filename, text))
        prev_stack = stack
        at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
        return not at_end and len(diags) < _MAX_SYNTAX_ERRORS

    try:
        tree = _parser().parse(text, on_error=on_error)
    except UnexpectedInput as exc:
        if not diags:
            diags.append(_syntax_diag(exc, filename, text))
        raise DiagnosticError(diags) from None
    if diags:
        raise DiagnosticError(diags)
    return tree


# ---------------------------------------------------------------- tree -> data


class _Converter:
    """Parse tree -> raw data + LocMap, collecting semantic errors (duplicates, ...)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.locs = LocMap()
        self.diags = Collector()
        self.implicit: set[str] = set()  # top-level keys made by let / def / layer items

    def tok_loc(self, tok: lark.Token) -> SourceLoc:
        end = tok.end_column if tok.end_line == tok.line else None
        return SourceLoc(self.filename, tok.line, tok.column, end)

    def tree_loc(self, tree: lark.Tree) -> SourceLoc:
        m = tree.meta
        end = m.end_column if m.end_line == m.line else None
        return SourceLoc(self.filename, m.line, m.column, end)

    def loc(self, node: lark.Tree | lark.Token) -> SourceLoc:
        return self.tok_loc(node) if isinstance(node, lark.Token) else self.tree_loc(node)

    @staticmethod
    def text(tok: lark.Token) -> str:
        return json.loads(tok) if tok.type == "STRING" else str(tok)

    # -- the model

    def model(self, start: lark.Tree) -> dict[str, Any]:
        tree = next(c for c in start.children if isinstance(c, lark.Tree))
        kw = tree.children[0]
        data: dict[str, Any] = {}
        self.locs.set((), self.tree_loc(tree))
        for child in tree.children[1:]:
            if isinstance(child, lark.Token):
                data["model"] = self.text(child)
                self.locs.set(("model",), self.tok_loc(child), self.tok_loc(kw))
            elif isinstance(child, lark.Tree) and child.data == "args":
                for arg in child.children[1:]:
                    if arg.data == "posarg":
                        self.diags.error(
                            "the model header takes only name=value arguments",
                            self.loc(arg.children[0]),
                        )
                    else:
                        self.top_set(data, arg.children[0], arg.children[1])
            elif isinstance(child, lark.Tree):
                self.model_body(child, data)
        return data

    def model_body(self, tree: lark.Tree, data: dict[str, Any]) -> None:
        if not tree.children:
            data["layers"] = []
            self.locs.set(("layers",), self.tree_loc(tree), self.tree_loc(tree))
            return
        for stmt in tree.children:
            if stmt.data == "setting":
                self.top_set(data, stmt.children[0], stmt.children[1])
            elif stmt.data == "let":
                kw, name, value = stmt.children
                table = self.implicit_key(data, "vars", kw, {})
                if table is not None:
                    self.entry(table, ("vars",), name, value, "variable")
            elif stmt.data == "def":
                kw, name, body = stmt.children
                table = self.implicit_key(data, "define", kw, {})
                if table is not None:
                    if str(name) in table:
                        self.diags.error(f"duplicate block '{name}'", self.tok_loc(name))
                    else:
                        self.locs.set(("define", str(name)), None, self.tok_loc(name))
                        table[str(name)] = self.body(body, ("define", str(name)))
            else:
                layers = self.implicit_key(data, "layers", stmt, [], self.tree_loc(tree))
                if layers is not None:
                    layers.append(self.item(stmt, ("layers", len(layers))))

    def implicit_key(
        self,
        data: dict[str, Any],
        key: str,
        at: lark.Tree | lark.Token,
        empty: Any,
        loc: SourceLoc | None = None,
    ) -> Any:
        """data[key] made by let/def/items; None (and an error) if set explicitly."""
        if key in data and key not in self.implicit:
            self.diags.error(
                f"'{key}' is already set at {self.locs.key((key,))}; "
                f"it cannot also be built by {self.what(key)}",
                self.loc(at),
            )
            return None
        if key not in data:
            data[key] = empty
            self.implicit.add(key)
            where = loc or self.loc(at)
            self.locs.set((key,), where, where)
        return data[key]

    @staticmethod
    def what(key: str) -> str:
        return {"vars": "'let'", "define": "'def'"}.get(key, "layer items")

    def top_set(self, data: dict[str, Any], key_tok: lark.Token, value: Any) -> None:
        key = self.text(key_tok)
        if key in data:
            first = self.locs.key((key,))
            extra = f" (set by {self.what(key)})" if key in self.implicit else ""
            self.diags.error(
                f"duplicate key '{key}'{extra}",
                self.tok_loc(key_tok),
                hint=f"first set at {first}" if first else None,
            )
            return
        self.locs.set((key,), None, self.tok_loc(key_tok))
        data[key] = self.value(value, (key,))

    def entry(
        self, table: dict[str, Any], path: Path, key_tok: lark.Token, value: Any, what: str
    ) -> None:
        key = self.text(key_tok)
        if key in table:
            self.diags.error(f"duplicate {what} '{key}'", self.tok_loc(key_tok))
            return
        self.locs.set((*path, key), None, self.tok_loc(key_tok))
        table[key] = self.value(value, (*path, key))

    # -- layer items

    def body(self, tree: lark.Tree, path: Path) -> list[Any]:
        self.locs.set(path, self.tree_loc(tree))
        return [self.item(c, (*path, i)) for i, c in enumerate(tree.children)]

    def item(self, tree: lark.Tree, path: Path) -> Any:
        name_tok, args, body = tree.children
        name = self.text(name_tok)
        self.locs.set(path, self.tree_loc(tree))
        if args is None and body is None:
            return name
        ipath = (*path, name)
        self.locs.set(ipath, None, self.tok_loc(name_tok))
        if args is None:
            return {name: self.body(body, ipath)}
        pos = [a.children[0] for a in args.children[1:] if a.data == "posarg"]
        kws = [a for a in args.children[1:] if a.data == "kwarg"]
        if body is None and len(pos) == 1 and not kws:
            return {name: self.value(pos[0], ipath)}
        self.locs.set(ipath, self.tree_loc(args))
        params: dict[str, Any] = {}
        if pos:
            prim = primary_param(name)
            if prim is None:
                hint = None
                if get_component(name) is None:
                    hint = did_you_mean(name, component_names())
                self.diags.error(
                    f"component '{name}' takes no positional argument",
                    self.loc(pos[0]),
                    hint=hint or "write NAME(key=value)",
                )
            else:
                self.locs.set((*ipath, prim), None, self.loc(pos[0]))
                params[prim] = self.value(pos[0], (*ipath, prim))
            for extra in pos[1:]:
                self.diags.error(f"'{name}' takes at most one positional argument", self.loc(extra))
        for kw in kws:
            self.entry(params, ipath, kw.children[0], kw.children[1], "argument")
        if body is not None:
            if "body" in params:
                self.diags.error(
                    "duplicate argument 'body'",
                    self.tree_loc(body),
                    hint="give the body either as body=[...] or in braces",
                )
            else:
                self.locs.set((*ipath, "body"), None, self.tree_loc(body))
                params["body"] = self.body(body, (*ipath, "body"))
        return {name: params}

    # -- values

    def value(self, node: lark.Tree | lark.Token, path: Path) -> Any:
        self.locs.set(path, self.loc(node))
        if isinstance(node, lark.Token):
            return self.scalar(node)
        if node.data == "call":
            name, arg = node.children
            return f"{name}({arg})"
        if node.data == "list":
            return [self.value(c, (*path, i)) for i, c in enumerate(node.children)]
        out: dict[str, Any] = {}
        for pair in node.children:
            self.entry(out, path, pair.children[0], pair.children[1], "key")
        return out

    def scalar(self, tok: lark.Token) -> Any:
        kind = tok.type
        if kind == "INT":
            return int(tok)
        if kind == "FLOAT":
            value = float(tok)
            if not math.isfinite(value):
                self.diags.error(f"number {tok} is out of range", self.tok_loc(tok))
            return value
        if kind == "TRUE":
            return True
        if kind == "FALSE":
            return False
        if kind == "NULL":
            return None
        return self.text(tok)


def parse_dsl(text: str, filename: str) -> tuple[Any, LocMap]:
    """Parse archc DSL text into raw spec data and its LocMap, or raise DiagnosticError."""
    register_source(filename, text)
    _check_brackets(text, filename)
    tree = _parse_tree(text, filename)
    conv = _Converter(filename)
    try:
        data = conv.model(tree)
    except RecursionError:
        raise error(
            "spec nests too deeply to read",
            SourceLoc(filename, 1, 1),
            hint="lower ARCHC_MAX_SPEC_DEPTH",
        ) from None
    conv.diags.raise_if_any()
    return data, conv.locs
