"""Expressions of custom recurrent cells: parse (grammar/cell_expr.lark), check, print.

A `cell` component writes its step as named expressions over the layer input `x`, the
carried state and earlier `let`s. This module turns their text into frozen trees,
checks names and widths (numbers broadcast; elementwise ops need equal widths), names
every call site that owns parameters (`let_z_linear0`), and prints a canonical text
that the IR keeps as the scan's `body` attribute. Nothing is ever evaluated: the torch
backend generates code from these trees. No torch here (`archc check` stays fast).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import re
from dataclasses import dataclass, field

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from archc.diagnostics import SourceLoc, did_you_mean, source_line

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Elementwise functions: name -> approximate FLOPs per element (for the cost model).
UNARY = {
    "tanh": 4.0,
    "sigmoid": 4.0,
    "relu": 1.0,
    "gelu": 8.0,
    "silu": 5.0,
    "exp": 2.0,
    "log": 2.0,
    "softplus": 4.0,
    "abs": 1.0,
}
# Functions that own parameters: linear(e, out, bias=true) is W e + b with its own W;
# diag(e) is a learned per-unit vector times e; param(n) a learned vector of width n.
PARAM_FUNCS = ("linear", "diag", "param")
FUNCTIONS = (*UNARY, *PARAM_FUNCS)
RESERVED = frozenset({"x", *FUNCTIONS, "true", "false"})
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Expr:
    """A node of an expression; start/end are 0-based offsets into its text."""

    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True)
class Num(Expr):
    value: int | float


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class Neg(Expr):
    arg: Expr


@dataclass(frozen=True)
class Bin(Expr):
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Call(Expr):
    """fn(args, kw=value); `site` names a parameter-owning call (set by the checker)."""

    fn: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...] = ()
    site: str = ""

    def bias(self) -> bool:
        return dict(self.kwargs).get("bias", Name("true")) != Name("false")


class ExprError(ValueError):
    """A problem at text[start:end] of an expression (start None: the whole value)."""

    def __init__(
        self,
        message: str,
        start: int | None = None,
        end: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.start, self.end, self.hint = message, start, end, hint


@functools.cache
def _parser() -> lark.Lark:
    text = importlib.resources.files("archc.grammar").joinpath("cell_expr.lark").read_text()
    return lark.Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _tree(t: lark.Tree | lark.Token) -> Expr:
    if isinstance(t, lark.Token):  # pragma: no cover - every token sits under a rule
        raise ExprError(f"unexpected {t!s}", t.start_pos, t.end_pos)
    pos = {"start": t.meta.start_pos, "end": t.meta.end_pos}
    kind, ch = t.data, t.children
    if kind == "num":
        s = str(ch[0])
        value: int | float = float(s) if any(c in s for c in ".eE") else int(s)
        return Num(value, **pos)
    if kind == "name":
        return Name(str(ch[0]), **pos)
    if kind == "neg":
        return Neg(_tree(ch[0]), **pos)
    if kind in ("add", "sub", "mul", "div"):
        op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[kind]
        return Bin(op, _tree(ch[0]), _tree(ch[1]), **pos)
    assert kind == "call", kind
    args: list[Expr] = []
    kwargs: list[tuple[str, Expr]] = []
    for c in ch[1:]:
        if isinstance(c, lark.Tree) and c.data == "kwarg":
            kwargs.append((str(c.children[0]), _tree(c.children[1])))
        elif kwargs:
            raise ExprError("a positional argument follows a keyword argument", **_span(c))
        else:
            args.append(_tree(c))
    return Call(str(ch[0]), tuple(args), tuple(kwargs), **pos)


def _span(t: lark.Tree | lark.Token) -> dict[str, int]:
    if isinstance(t, lark.Token):
        return {"start": t.start_pos or 0, "end": t.end_pos or 0}
    return {"start": t.meta.start_pos, "end": t.meta.end_pos}


def parse(text: str) -> Expr:
    """The tree of one expression; raises ExprError at the offending character."""
    if not text.strip():
        raise ExprError("empty expression")
    try:
        return _tree(_parser().parse(text))
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            n = len(text.rstrip())
            raise ExprError("cannot parse expression: it ends too early", n, n + 1) from None
        start = tok.start_pos
        raise ExprError(
            f"cannot parse expression: unexpected {str(tok)!r}", start, start + len(str(tok))
        ) from None
    except UnexpectedCharacters as exc:
        raise ExprError(
            f"cannot parse expression: unexpected character {text[exc.pos_in_stream]!r}",
            exc.pos_in_stream,
            exc.pos_in_stream + 1,
        ) from None
    except UnexpectedInput as exc:  # pragma: no cover - the two above cover LALR errors
        raise ExprError(f"cannot parse expression: {exc}") from None


def _prec(e: Expr) -> int:
    if isinstance(e, Bin):
        return _PREC[e.op]
    return 3 if isinstance(e, Neg) else 4


def canon(e: Expr) -> str:
    """Canonical text: minimal parentheses, `bias=false` only when set, repr'd numbers."""
    if isinstance(e, Num):
        return repr(e.value)
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Neg):
        inner = canon(e.arg)
        return f"-({inner})" if _prec(e.arg) < 3 else f"-{inner}"
    if isinstance(e, Bin):
        a, b = canon(e.a), canon(e.b)
        if _prec(e.a) < _PREC[e.op]:
            a = f"({a})"
        if _prec(e.b) <= _PREC[e.op]:
            b = f"({b})"
        return f"{a} {e.op} {b}"
    assert isinstance(e, Call)
    parts = [canon(a) for a in e.args]
    parts += [f"{k}={canon(v)}" for k, v in e.kwargs if not (k == "bias" and e.bias())]
    return f"{e.fn}({', '.join(parts)})"


# -- the checked cell -------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """Parameters a call site owns: `name` prefixes them (name_weight, name_bias, ...)."""

    name: str
    fn: str  # linear | diag | param
    d_in: int  # linear: input width; diag/param: the vector width
    d_out: int
    bias: bool


@dataclass(frozen=True)
class Cell:
    """A checked custom cell: widths known, call sites named, trees with positions."""

    d_in: int
    state: tuple[tuple[str, int], ...]
    lets: tuple[tuple[str, Expr], ...]
    updates: tuple[tuple[str, Expr], ...]  # in state order
    output: Expr
    widths: dict[str, int | None] = field(compare=False, hash=False)  # lets (None: scalar)
    sites: tuple[Site, ...] = ()
    out_width: int = 0

    def body(self) -> tuple:
        """The canonical, hashable form the IR keeps (the scan's `body` attribute)."""
        return (
            ("state", self.state),
            ("let", tuple((k, canon(e)) for k, e in self.lets)),
            ("update", tuple((k, canon(e)) for k, e in self.updates)),
            ("output", canon(self.output)),
        )

    def state_deps(self, e: Expr) -> frozenset[str]:
        """The state entries `e` reads, directly or through lets."""
        let_deps = self.let_deps
        out: set[str] = set()
        for n in names(e):
            if n in let_deps:
                out |= let_deps[n]
            elif n in dict(self.state):
                out.add(n)
        return frozenset(out)

    @functools.cached_property
    def let_deps(self) -> dict[str, frozenset[str]]:
        """For each let, the state entries it reads (through earlier lets too)."""
        deps: dict[str, frozenset[str]] = {}
        states = dict(self.state)
        for k, e in self.lets:
            s: set[str] = set()
            for n in names(e):
                s |= deps.get(n, frozenset({n} if n in states else ()))
            deps[k] = frozenset(s)
        return deps

    def newton_problem(self) -> tuple[str, str, Expr] | None:
        """Why d state_t / d state_{t-1} is not diagonal: (field, message, subexpression),
        or None when it is (each update reads only its own entry, elementwise)."""
        for field_name, e in (*((f"let.{k}", e) for k, e in self.lets),
                              *((f"update.{k}", e) for k, e in self.updates)):  # fmt: skip
            for sub in walk(e):
                if isinstance(sub, Call) and sub.fn == "linear" and self.state_deps(sub.args[0]):
                    return (
                        field_name,
                        "mode 'newton' needs a diagonal Jacobian, but this linear() mixes "
                        "units of a state-dependent input",
                        sub,
                    )
        for k, e in self.updates:
            other = sorted(self.state_deps(e) - {k})
            if other:
                return (
                    f"update.{k}",
                    f"mode 'newton' needs a diagonal Jacobian, but the update of '{k}' reads "
                    f"the state '{other[0]}' too",
                    e,
                )
        return None

    def flops(self) -> float:
        """Forward FLOPs per token: 2 per multiply-add of linear(), the table for the rest."""
        total = 0.0
        for e in (*(e for _, e in self.lets), *(e for _, e in self.updates), self.output):
            for sub in walk(e):
                w = self.width_of(sub) or 1
                if isinstance(sub, Call) and sub.fn == "linear":
                    site = next(s for s in self.sites if s.name == sub.site)
                    total += 2.0 * site.d_in * site.d_out + (site.d_out if site.bias else 0)
                elif isinstance(sub, Call):
                    total += UNARY.get(sub.fn, 1.0 if sub.fn == "diag" else 0.0) * w
                elif isinstance(sub, (Bin, Neg)):
                    total += w
        return total

    def width_of(self, e: Expr) -> int | None:
        """The width of a checked subexpression (None: a scalar)."""
        return _Checker(self.d_in, self.state, self.widths).width(e)


def walk(e: Expr) -> list[Expr]:
    """`e` and all its subexpressions, parents first."""
    out, stack = [], [e]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, Neg):
            stack.append(n.arg)
        elif isinstance(n, Bin):
            stack += [n.b, n.a]
        elif isinstance(n, Call):
            stack += [v for _, v in reversed(n.kwargs)] + list(reversed(n.args))
    return out


def names(e: Expr) -> list[str]:
    """Variable names `e` reads (not function names)."""
    return [n.id for n in walk(e) if isinstance(n, Name)]


@dataclass
class Problem:
    """A located problem: `field` is `let.z`, `update.h`, `output`, `state.h`, ..."""

    field: str
    error: ExprError


class _Checker:
    def __init__(
        self, d_in: int, state: tuple[tuple[str, int], ...], widths: dict[str, int | None]
    ) -> None:
        self.d_in, self.state, self.widths = d_in, dict(state), widths
        self.counts: dict[str, int] = {}
        self.sites: list[Site] = []

    def width(self, e: Expr) -> int | None:
        """Width of an already checked tree."""
        if isinstance(e, Num):
            return None
        if isinstance(e, Name):
            if e.id == "x":
                return self.d_in
            return self.state[e.id] if e.id in self.state else self.widths.get(e.id)
        if isinstance(e, Neg):
            return self.width(e.arg)
        if isinstance(e, Bin):
            a, b = self.width(e.a), self.width(e.b)
            return a if a is not None else b
        assert isinstance(e, Call)
        if e.fn == "linear":
            return int(e.args[1].value)  # type: ignore[attr-defined]
        if e.fn == "param":
            return int(e.args[0].value)  # type: ignore[attr-defined]
        return self.width(e.args[0])

    def check(
        self, e: Expr, prefix: str, scope: dict[str, int | None], later: set[str]
    ) -> tuple[Expr, int | None]:
        """(tree with call sites named, width); raises ExprError."""
        if isinstance(e, Num):
            if not math.isfinite(float(e.value)):
                raise ExprError("number out of range", e.start, e.end)
            return e, None
        if isinstance(e, Name):
            if e.id in scope:
                return e, scope[e.id]
            if e.id in later:
                msg = f"'{e.id}' is used before it is defined (lets run in order)"
                raise ExprError(msg, e.start, e.end)
            hint = did_you_mean(e.id, scope) or f"known names: {', '.join(sorted(scope))}"
            if e.id in FUNCTIONS:
                hint = f"'{e.id}' is a function: write {e.id}(...)"
            raise ExprError(f"undefined name '{e.id}'", e.start, e.end, hint)
        if isinstance(e, Neg):
            arg, w = self.check(e.arg, prefix, scope, later)
            return dataclasses.replace(e, arg=arg), w
        if isinstance(e, Bin):
            a, wa = self.check(e.a, prefix, scope, later)
            b, wb = self.check(e.b, prefix, scope, later)
            if wa is not None and wb is not None and wa != wb:
                raise ExprError(
                    f"width mismatch: '{canon(a)}' is {wa} wide but '{canon(b)}' is {wb} "
                    f"(elementwise '{e.op}' needs equal widths; numbers broadcast)",
                    e.start,
                    e.end,
                )
            return dataclasses.replace(e, a=a, b=b), wa if wa is not None else wb
        assert isinstance(e, Call)
        return self.call(e, prefix, scope, later)

    def call(
        self, e: Call, prefix: str, scope: dict[str, int | None], later: set[str]
    ) -> tuple[Expr, int | None]:
        fn_end = e.start + len(e.fn)
        if e.fn not in FUNCTIONS:
            hint = did_you_mean(e.fn, FUNCTIONS) or f"functions: {', '.join(FUNCTIONS)}"
            raise ExprError(f"unknown function '{e.fn}'", e.start, fn_end, hint)
        allowed = ("bias",) if e.fn == "linear" else ()
        for k, v in e.kwargs:
            if k not in allowed:
                hint = did_you_mean(k, allowed)
                raise ExprError(f"{e.fn}() takes no argument '{k}'", v.start, v.end, hint)
            if v not in (Name("true"), Name("false")):
                raise ExprError(f"{e.fn}() argument '{k}' must be true or false", v.start, v.end)
        arity = {"linear": 2, "param": 1}.get(e.fn, 1)
        usage = {"linear": "linear(e, out, bias=true)", "param": "param(width)"}
        if len(e.args) != arity:
            sig = usage.get(e.fn, f"{e.fn}(e)")
            raise ExprError(f"{e.fn}() takes {arity} argument(s): {sig}", e.start, e.end)
        if e.fn == "param":
            return self._site(e, prefix, e.args[0], 0), self._int(e.args[0], "param() width")
        arg, w = self.check(e.args[0], prefix, scope, later)
        if e.fn in UNARY:
            return dataclasses.replace(e, args=(arg,)), w
        if w is None:
            raise ExprError(f"{e.fn}() needs a vector, not a number", arg.start, arg.end)
        if e.fn == "diag":
            return self._site(dataclasses.replace(e, args=(arg,)), prefix, None, w), w
        out = self._int(e.args[1], "linear() output width")
        call = dataclasses.replace(e, args=(arg, e.args[1]))
        return self._site(call, prefix, None, w), out

    @staticmethod
    def _int(e: Expr, what: str) -> int:
        if not (isinstance(e, Num) and isinstance(e.value, int) and e.value > 0):
            raise ExprError(f"{what} must be a positive integer literal", e.start, e.end)
        return e.value

    def _site(self, e: Call, prefix: str, width: Expr | None, d_in: int) -> Call:
        n = self.counts.get(e.fn, 0)
        self.counts[e.fn] = n + 1
        name = f"{prefix}_{e.fn}{n}"
        if e.fn == "linear":
            d_out = self._int(e.args[1], "linear() output width")
        elif e.fn == "param":
            d_out = d_in = self._int(width, "param() width")  # type: ignore[arg-type]
        else:
            d_out = d_in
        self.sites.append(Site(name, e.fn, d_in, d_out, e.fn == "linear" and e.bias()))
        return dataclasses.replace(e, site=name)


_NAMES_HINT = "names are identifiers other than x (the layer input) and the functions"


def _text(v: object) -> str:
    return v if isinstance(v, str) else repr(v)


def check_cell(
    state: dict[str, int],
    lets: dict[str, object],
    updates: dict[str, object],
    output: object,
    d_in: int,
) -> tuple[Cell | None, list[Problem]]:
    """Parse and check a cell's expressions against input width `d_in`; every problem
    found is returned (the cell is None if there is any)."""
    problems: list[Problem] = []
    for k in state:
        if not IDENT.match(k) or k in RESERVED:
            msg = f"'{k}' cannot name a state entry"
            problems.append(Problem(f"state.{k}", ExprError(msg, hint=_NAMES_HINT)))
    for k in lets:
        if not IDENT.match(k) or k in RESERVED or k in state:
            what = "is a state entry" if k in state else "is not a usable name"
            hint = None if k in state else _NAMES_HINT
            problems.append(Problem(f"let.{k}", ExprError(f"let '{k}' {what}", hint=hint)))
    if problems:
        return None, problems
    ck = _Checker(d_in, tuple(state.items()), {})
    scope: dict[str, int | None] = {"x": d_in, **state}
    later = set(lets)
    checked_lets: list[tuple[str, Expr]] = []
    for k, text in lets.items():
        later.discard(k)
        ck.counts = {}  # sites are numbered per entry: let_z_linear0, let_z_linear1
        try:
            e, w = ck.check(parse(_text(text)), f"let_{k}", scope, later)
        except ExprError as exc:
            problems.append(Problem(f"let.{k}", exc))
            scope[k] = None  # keep checking the rest without cascading errors
            continue
        scope[k], ck.widths[k] = w, w
        checked_lets.append((k, e))
    checked_updates: list[tuple[str, Expr]] = []
    for k, text in updates.items():
        if k not in state:
            hint = did_you_mean(k, state) or f"state entries: {', '.join(state)}"
            msg = f"update of '{k}', which is not a state entry"
            problems.append(Problem(f"update.{k}", ExprError(msg, hint=hint)))
            continue
        ck.counts = {}
        try:
            e, w = ck.check(parse(_text(text)), f"update_{k}", scope, set())
            if w != state[k]:
                got = "a number" if w is None else f"{w} wide"
                raise ExprError(f"the update of '{k}' is {got}, but '{k}' is {state[k]} wide")
        except ExprError as exc:
            problems.append(Problem(f"update.{k}", exc))
            continue
        checked_updates.append((k, e))
    for k in state:
        if k not in updates:
            problems.append(Problem("update", ExprError(f"state '{k}' has no update")))
    out, out_w = None, None
    ck.counts = {}
    try:
        out, out_w = ck.check(parse(_text(output)), "output", scope, set())
        if out_w is None:
            raise ExprError("the output must be a vector, not a number")
    except ExprError as exc:
        problems.append(Problem("output", exc))
    if problems or out is None or out_w is None:
        return None, problems
    order = {k: i for i, k in enumerate(state)}
    cell = Cell(
        d_in=d_in,
        state=tuple(state.items()),
        lets=tuple(checked_lets),
        updates=tuple(sorted(checked_updates, key=lambda kv: order[kv[0]])),
        output=out,
        widths=dict(ck.widths),
        sites=tuple(ck.sites),
        out_width=out_w,
    )
    return cell, []


@functools.lru_cache(maxsize=256)
def cell_from_body(body: tuple, d_in: int) -> Cell:
    """The Cell of an IR `body` attribute (canonical texts, already checked once)."""
    parts = dict(body)
    cell, problems = check_cell(
        dict(parts["state"]), dict(parts["let"]), dict(parts["update"]), parts["output"], d_in
    )
    if cell is None:
        raise ValueError(f"invalid custom cell body: {problems[0].error.message}")
    return cell


def expr_loc(base: SourceLoc | None, start: int | None, end: int | None) -> SourceLoc | None:
    """The location of text[start:end] of an expression written at `base` (a YAML or
    DSL string value). Quoted values start one column later; values spanning lines
    (folded YAML) or holding ${...} keep `base`, whose columns do not match the text."""
    if base is None or start is None or base.end_col is None:
        return base
    line = source_line(base.file, base.line) or ""
    if "${" in line[base.col - 1 : base.end_col - 1]:
        return base  # interpolated: the text differs from what the user wrote
    quoted = line[base.col - 1 : base.col] in ("'", '"')
    col = base.col + start + (1 if quoted else 0)
    return SourceLoc(base.file, base.line, col, col + max(1, (end or start + 1) - start))
