"""docs/reference.md is the generator's output (archc/frontend/reference.py)."""

from __future__ import annotations

import re
from pathlib import Path

from archc.frontend.components import component_names
from archc.frontend.reference import REGENERATE, render_reference
from archc.ir.ops import OPS

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render_reference(), (
        f"docs/reference.md is stale; regenerate it with `{REGENERATE}`"
    )


def test_reference_covers_every_component_and_op() -> None:
    text = DOC.read_text()
    headings = set(re.findall(r"^### `([^`]+)`$", text, re.M))
    ops = set(re.findall(r"^### op `([^`]+)`$", text, re.M))
    assert set(component_names()) <= headings, f"regenerate with `{REGENERATE}`"
    assert set(OPS) == ops, f"regenerate with `{REGENERATE}`"
    # Every component that lowers names at least one op-table op.
    for link in re.findall(r"\(#op-([a-z_0-9]+)\)", text):
        assert link in OPS


def test_attention_row_matches_its_model() -> None:
    # Independent facts from components.py: heads is an int > 0 defaulting to 4, and
    # mask allows exactly causal and none.
    text = DOC.read_text()
    assert "| `heads` | int > 0 | `4` |" in text
    assert "| `mask` | causal \\| none | causal |" in text
