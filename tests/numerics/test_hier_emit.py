"""`archc compile --emit torch` of the hier specs (router nested in router, whitespace
split, stride tiers): each standalone model.py (torch only) computes what the compiled
module computes. One subprocess runs all three to keep the test short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import archc
from archc.cli import run

SPECS = Path(__file__).resolve().parents[2] / "specs"
NAMES = ["hnet-2stage", "hat", "cm-hrnn"]

_RUNNER = """
import importlib.util, sys
sys.modules["archc"] = None  # model.py must not import archc
import torch
for name in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location(f"m_{name}", f"{name}/model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Model()
    model.load_state_dict(torch.load(f"{name}/state.pt"))
    model.eval()
    with torch.no_grad():
        torch.save(model(torch.load("x.pt")), f"{name}/y.pt")
"""


def test_emitted_hier_models_match_compiled(tmp_path: Path) -> None:
    text = b"the cat sat on the mat and then it ran off"
    x = torch.tensor([list(text[:32]), list(text[8:40])])
    torch.save(x, tmp_path / "x.pt")
    expected = {}
    for name in NAMES:
        (tmp_path / name).mkdir()
        messages: list[str] = []
        out = tmp_path / name / "model.py"
        code = run(["compile", str(SPECS / f"{name}.yaml"), "--emit", "torch", "-o", str(out)],
                   handler=messages.append)  # fmt: skip
        assert code == 0, messages
        model = archc.compile(SPECS / f"{name}.yaml", seed=3).eval()
        torch.save(model.state_dict(), tmp_path / name / "state.pt")
        with torch.no_grad():
            expected[name] = model(x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", _RUNNER, *NAMES], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for name in NAMES:
        got = torch.load(tmp_path / name / "y.pt")
        assert (got - expected[name]).abs().max().item() <= 1e-5, name
