"""Pass pipelines: the registry, the pipeline-string parser and the runner.

A pipeline string names passes in order, each with optional typed options:
``canonicalize,cse,fuse-pointwise{max_ops=16},dce``. The CLI (`--passes`, `-O0`,
`-O2`), the tests and search all go through `parse_pipeline` and `run_pipeline`.

A pass is a frozen dataclass with a class-level `name`, typed option fields and
`run(graph) -> PassResult`; `@register_pass` makes it available by name. Options the
string leaves out that the run knows (`device`, `seq_len`) come from `context`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from archc import knobs
from archc.diagnostics import Diagnostic, DiagnosticError, SourceLoc, register_source
from archc.ir.graph import Graph
from archc.passes.base import PassResult


class Pass(Protocol):
    name: str

    def run(self, graph: Graph) -> PassResult: ...


PASSES: dict[str, type] = {}

# Pipelines by optimisation level. -O2 is the default of `archc compile`/`train`.
O0 = ""
O2 = (
    "canonicalize,const-fold,cse,tie-weights,dce,fuse-pointwise,dce,select-scan-mode,assign-kernels"
)


def register_pass(cls: type) -> type:
    """Class decorator: make a pass dataclass available to pipeline strings by `cls.name`."""
    name = cls.__dict__.get("name") or getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if name in PASSES and PASSES[name] is not cls:
        raise ValueError(f"pass {name!r} already registered")
    PASSES[name] = cls
    return cls


def _load_builtin_passes() -> None:
    """Import every pass module so that each registers itself."""
    import importlib
    import pkgutil

    import archc.passes as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in {"base", "pipeline", "__init__"}:
            importlib.import_module(f"archc.passes.{info.name}")


def pipeline_for_level(level: int) -> str:
    """The pipeline string of -O`level` (0: nothing; 1 and 2: the default pipeline)."""
    return O0 if level <= 0 else O2


# -- parsing ------------------------------------------------------------------------
_ITEM = re.compile(r"\s*([A-Za-z][\w-]*)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


_PREFIX = re.compile(r"\s*[A-Za-z][\w-]*\s*(?:\{[^{}]*\})?\s*")


def _error(
    text: str, message: str, col: int, source: str, hint: str | None = None
) -> DiagnosticError:
    register_source(source, text)  # so the rendered error quotes the string with a caret
    return DiagnosticError([Diagnostic(message, SourceLoc(source, 1, col, col + 1), hint=hint)])


def _option_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "name" and f.init}


def _convert(raw: str, hint: Any) -> Any:
    """A pipeline-string option value as the field's type (int, float, bool, str, optional)."""
    raw = raw.strip()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_args(hint) and type(None) in typing.get_args(hint):
        if raw.lower() in {"none", ""}:
            return None
        hint = args[0] if len(args) == 1 else str
    if hint is bool:
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise ValueError(
            f"expected {'an integer' if hint is int else 'a number'}, got {raw!r}"
        ) from None
    return raw


def parse_pipeline(
    text: str, context: dict[str, Any] | None = None, source: str = "<passes>"
) -> list[Pass]:
    """Pass instances for a pipeline string; unknown passes or options are located errors.

    `context` supplies options the string leaves out, for passes that have them
    (`device`, `seq_len`).
    """
    _load_builtin_passes()
    context = context or {}
    passes: list[Pass] = []
    pos = 0
    text_s = text.rstrip()
    while pos < len(text_s):
        m = _ITEM.match(text_s, pos)
        if m is None or m.end() == pos:
            # Point past the longest well-formed prefix: where the string went wrong.
            good = _PREFIX.match(text_s, pos)
            at = good.end() if good and good.end() > pos else pos
            at += len(text_s[at:]) - len(text_s[at:].lstrip())
            what = "',' between passes" if good and good.end() > pos else "a pass name"
            if text_s[at : at + 1] == "{":
                what = "an option list closed by '}'"
            raise _error(text, f"expected {what} (as in 'cse,dce{{...}}')", at + 1, source)
        name, opts = m.group(1), m.group(2)
        col = m.start(1) + 1
        cls = PASSES.get(name)
        if cls is None:
            known = ", ".join(sorted(PASSES))
            close = difflib.get_close_matches(name, list(PASSES), n=1)
            hint = f"did you mean '{close[0]}'?" if close else None
            raise _error(text, f"unknown pass '{name}' (known: {known})", col, source, hint)
        fields = _option_fields(cls)
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {k: v for k, v in context.items() if k in fields}
        start = m.start(2) if opts is not None else 0
        for item in (opts or "").split(","):
            # Columns point at the offending option (key) or value, 1-based.
            at = start + len(item) - len(item.lstrip()) + 1
            start += len(item) + 1
            if not item.strip():
                continue
            if "=" not in item:
                raise _error(text, f"option '{item.strip()}' needs a value: key=value", at, source)
            key, value = (s.strip() for s in item.split("=", 1))
            if key not in fields:
                allowed = ", ".join(sorted(fields)) or "none"
                raise _error(
                    text, f"pass '{name}' has no option '{key}' (options: {allowed})", at, source
                )
            raw = item.split("=", 1)[1]
            vat = at + item.strip().index("=") + 1 + len(raw) - len(raw.lstrip())
            try:
                kwargs[key] = _convert(value, hints[key])
            except ValueError as exc:
                raise _error(text, f"option '{key}' of '{name}': {exc}", vat, source) from None
        passes.append(cls(**kwargs))
        pos = m.end()
    return passes


def format_pipeline(passes: Sequence[Pass]) -> str:
    """The pipeline string of `passes`, options that differ from their defaults included."""
    out = []
    for p in passes:
        opts = []
        for f in _option_fields(type(p)).values():
            value = getattr(p, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value != default:
                opts.append(f"{f.name}={value}")
        out.append(p.name + ("{" + ",".join(opts) + "}" if opts else ""))
    return ",".join(out)


# -- running ------------------------------------------------------------------------
@dataclass
class PipelineResult:
    """The final graph and, per pass, its name and whether it changed the graph."""

    graph: Graph
    log: list[tuple[str, bool]] = field(default_factory=list)


def run_pipeline(
    graph: Graph,
    passes: Sequence[Pass] | str,
    *,
    verify_each: bool | None = None,
    after_each: Callable[[Pass, PassResult], None] | None = None,
    context: dict[str, Any] | None = None,
) -> PipelineResult:
    """Run `passes` in order. With `verify_each` (default: ARCHC_VERIFY=1) the verifier
    runs after every pass and a broken graph raises VerifyError naming that pass.
    `after_each(pass, result)` sees every step (--print-after-all)."""
    from archc.ir.verify import verify

    if isinstance(passes, str):
        passes = parse_pipeline(passes, context)
    if verify_each is None:
        verify_each = knobs.verify_each_pass()
    result = PipelineResult(graph)
    for p in passes:
        step = p.run(result.graph)
        if verify_each:
            verify(step.graph, after=p.name)
        if after_each is not None:
            after_each(p, step)
        result.graph = step.graph
        result.log.append((p.name, step.changed))
    return result
