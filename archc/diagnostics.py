"""Source locations, diagnostics and their caret rendering.

Every user mistake ends as a `DiagnosticError` holding one or more `Diagnostic`s, each
rendered as ``file:line:col: error: message`` followed by the offending source line and
a caret. The CLI prints them and exits with status 2; it never shows a traceback
(``ARCHC_DEBUG=1`` re-raises for developers).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

# Source text of every file the frontends have read, so a diagnostic can quote its line.
_SOURCES: dict[str, str] = {}


def register_source(filename: str, text: str) -> None:
    """Remember `text` as the content of `filename` for caret excerpts."""
    _SOURCES[filename] = text


def source_line(filename: str, line: int) -> str | None:
    """The 1-based `line` of a registered source, or None."""
    text = _SOURCES.get(filename)
    if text is None:
        return None
    lines = text.splitlines()
    if 1 <= line <= len(lines):
        return lines[line - 1]
    return None


@dataclass(frozen=True, order=True)
class SourceLoc:
    """A position in a spec file: 1-based line and column; `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One message about a spec, anchored at a source location."""

    message: str
    loc: SourceLoc | None = None
    severity: str = "error"
    hint: str | None = None

    def render(self) -> str:
        """`file:line:col: error: message`, the source line with a caret, and the hint."""
        where = f"{self.loc}: " if self.loc else ""
        out = [f"{where}{self.severity}: {self.message}"]
        if self.loc is not None:
            text = source_line(self.loc.file, self.loc.line)
            if text is not None:
                shown = text.expandtabs(1)
                if len(shown) > 200:  # keep pathological one-line files readable
                    start = max(0, self.loc.col - 100)
                    shown = shown[start : start + 200]
                    col = self.loc.col - start
                else:
                    col = self.loc.col
                width = 1
                if self.loc.end_col is not None and self.loc.end_col > self.loc.col:
                    width = min(self.loc.end_col - self.loc.col, max(1, len(shown) - col + 1))
                out.append(f"  {shown}")
                out.append("  " + " " * (col - 1) + "^" + "~" * (width - 1))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


@dataclass
class DiagnosticError(Exception):
    """Raised with every diagnostic found; the CLI renders them and exits 2."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in sorted_diagnostics(self.diagnostics))

    def __str__(self) -> str:
        return self.render()


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics in file order (those without a location last), duplicates dropped."""
    seen: set[tuple] = set()
    unique = []
    for d in diags:
        key = (d.loc, d.message)
        if key not in seen:
            seen.add(key)
            unique.append(d)

    files: dict[str, int] = {}
    for d in unique:
        if d.loc is not None:
            files.setdefault(d.loc.file, len(files))

    def order(d: Diagnostic) -> tuple:
        # Files in the order they were first reported (a note about the file that
        # extends another follows the error it explains); lines in order within a file.
        if d.loc is None:
            return (1, 0, 0, 0)
        return (0, files[d.loc.file], d.loc.line, d.loc.col)

    return sorted(unique, key=order)


def error(message: str, loc: SourceLoc | None = None, hint: str | None = None) -> DiagnosticError:
    """A `DiagnosticError` holding one error (for `raise error(...)`)."""
    return DiagnosticError([Diagnostic(message, loc, hint=hint)])


class Collector:
    """Accumulates diagnostics so that all errors of a file are reported at once."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, message: str, loc: SourceLoc | None = None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, loc, hint=hint))

    def extend(self, err: DiagnosticError) -> None:
        self.diagnostics.extend(err.diagnostics)

    def __bool__(self) -> bool:
        return bool(self.diagnostics)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise DiagnosticError(list(self.diagnostics))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for the closest candidate, or None."""
    close = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
