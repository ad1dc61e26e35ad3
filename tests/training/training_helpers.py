"""Helpers for training tests: load a library spec with overrides, read metrics."""

from __future__ import annotations

from pathlib import Path

from archc.api import load
from archc.frontend.schema import Spec

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def spec_with(name: str, *overrides: str) -> Spec:
    """specs/<name> with CLI-style overrides (quiet runs keep test logs short)."""
    return load(REPO / "specs" / name, list(overrides))
