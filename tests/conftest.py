"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

# The Triton interpreter must be chosen before triton is imported anywhere.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Run the IR verifier after every pass, so a pass that breaks a graph is named.
os.environ.setdefault("ARCHC_VERIFY", "1")


@pytest.fixture
def repo() -> Path:
    return REPO
