"""Every example script runs to completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(script)]
    if "emit" in script.name:
        args.append(str(tmp_path))
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
