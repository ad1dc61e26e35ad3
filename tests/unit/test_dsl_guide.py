"""docs/dsl.md: every ```arch block parses, and a ```yaml block right after one is its
twin (the same Spec, or the same raw data for fragments that are not complete specs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from archc.diagnostics import DiagnosticError
from archc.frontend.dsl import parse_dsl
from archc.frontend.resolve import load_spec
from archc.frontend.yaml import load_yaml

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "dsl.md"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.M | re.S)


def blocks() -> list[tuple[int, str, str | None]]:
    """(line, arch text, yaml twin or None) for every ```arch block of the guide."""
    text = GUIDE.read_text()
    found = list(_FENCE.finditer(text))
    out = []
    for i, m in enumerate(found):
        if m.group(1) != "arch":
            continue
        twin = None
        if i + 1 < len(found) and found[i + 1].group(1) == "yaml":
            between = text[m.end() : found[i + 1].start()]
            twin = found[i + 1].group(2) if not between.strip() else None
        out.append((text.count("\n", 0, m.start()) + 1, m.group(2), twin))
    return out


BLOCKS = blocks()


def test_guide_has_examples_and_twins() -> None:
    assert len(BLOCKS) >= 10
    assert sum(twin is not None for _, _, twin in BLOCKS) >= 10


def _spec(text: str, name: str) -> Any | None:
    try:
        return load_spec(name, text=text).semantic_dump()
    except DiagnosticError:
        return None


@pytest.mark.parametrize(("line", "arch", "twin"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_block_parses_and_matches_its_twin(line: int, arch: str, twin: str | None) -> None:
    data, _ = parse_dsl(arch, f"dsl.md:{line}.arch")
    assert isinstance(data, dict) and "model" in data
    if twin is None:
        return
    from_yaml = _spec(twin, f"dsl.md:{line}.yaml")
    if from_yaml is None:
        # A fragment (no d_model, ...): the raw data must agree.
        assert data == load_yaml(twin, f"dsl.md:{line}.yaml")[0]
    else:
        assert _spec(arch, f"dsl.md:{line}.arch") == from_yaml


def test_every_grammar_construct_is_shown() -> None:
    # The grammar's rules and keywords (grammar/archc.lark), each used by some example.
    arch = "\n".join(a for _, a, _ in BLOCKS)
    for construct in [
        r"^model \"",  # a quoted model name
        r"^model \w+$",  # a model without arguments or body
        r"\{\}",  # an empty body
        r"^\s*let \w+ =",  # let
        r"^\s*def \w+ \{",  # def
        r"^\s*\w+ = ",  # a setting
        r";",  # ';' separators
        r"\w\(\d, \w+=",  # a positional and a keyword argument
        r"\w\(\)",  # empty arguments
        r",\n\s*\)",  # a trailing comma before ')'
        r"\$\{",  # interpolation
        r"\b(true|false)\b",
        r"\bnull\b",
        r"\w\(\d+\)[,)]",  # a call value
        r"\[[^\]]+\]",  # a list
        r"\"[^\"]*\"",  # a string
        r"-?\d+e-?\d+",  # a float with an exponent
        r"^\s*#",  # a comment
    ]:
        assert re.search(construct, arch, re.M), construct
