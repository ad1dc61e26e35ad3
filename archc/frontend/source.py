"""Reading spec files safely: size limits, encoding and binary checks, format detection."""

from __future__ import annotations

from pathlib import Path

from archc import knobs
from archc.diagnostics import SourceLoc, error, register_source


def decode_spec_bytes(data: bytes, filename: str) -> str:
    """UTF-8 text of a spec, or a diagnostic for oversized, binary or mis-encoded input."""
    limit = knobs.max_spec_bytes()
    if len(data) > limit:
        raise error(
            f"spec is {len(data)} bytes, larger than the {limit}-byte limit",
            SourceLoc(filename, 1, 1),
            hint="raise ARCHC_MAX_SPEC_BYTES if this is really a spec",
        )
    if b"\x00" in data:
        off = data.index(b"\x00")
        line = data.count(b"\n", 0, off) + 1
        col = off - (data.rfind(b"\n", 0, off) + 1) + 1
        raise error(
            "spec is a binary file (it contains a NUL byte)", SourceLoc(filename, line, col)
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error("spec is not valid UTF-8 text", SourceLoc(filename, line, col)) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    register_source(filename, text)
    return text


def read_spec_file(path: str | Path) -> str:
    """The text of the spec at `path` (checked as in `decode_spec_bytes`)."""
    p = Path(path)
    name = str(path)
    try:
        size = p.stat().st_size
        if size > knobs.max_spec_bytes():
            # Refuse before reading a huge file into memory.
            raise error(
                f"spec is {size} bytes, larger than the {knobs.max_spec_bytes()}-byte limit",
                SourceLoc(name, 1, 1),
                hint="raise ARCHC_MAX_SPEC_BYTES if this is really a spec",
            )
        data = p.read_bytes()
    except IsADirectoryError as exc:
        raise error(f"{name} is a directory, not a spec file") from exc
    except FileNotFoundError as exc:
        raise error(f"no such spec file: {name}") from exc
    except PermissionError as exc:
        raise error(f"cannot read spec file {name}: permission denied") from exc
    return decode_spec_bytes(data, name)


def spec_format(filename: str, text: str | None = None) -> str:
    """'dsl' for .arch files (or text starting with `model NAME`), else 'yaml'."""
    if filename.endswith(".arch"):
        return "dsl"
    if filename.endswith((".yaml", ".yml")):
        return "yaml"
    if text is not None:
        for line in text.splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            return "dsl" if s.startswith("model ") and not s.startswith("model:") else "yaml"
    return "yaml"
