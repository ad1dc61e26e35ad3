"""`archc compile SPEC --emit torch` writes a standalone model.py equal to the compiled module.

The emitted file is imported in a fresh interpreter whose environment has no PYTHONPATH
and in which `import archc` is made to fail, so it can only work on torch and the
standard library. It loads the state_dict of the in-memory `archc.compile` module and
must reproduce its outputs.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archc
from archc.cli import run

SPECS = Path(__file__).resolve().parents[2] / "specs"
EMITTED = ["gpt.yaml", "lstm.yaml", "looped.yaml"]

_RUNNER = """
import sys
sys.modules["archc"] = None  # any 'import archc' in model.py now raises ImportError
import torch
from model import Model
model = Model()
model.load_state_dict(torch.load("state.pt"))
model.eval()
x = torch.load("x.pt")
with torch.no_grad():
    y = model(x)
torch.save(y, "y.pt")
fresh = Model()
fresh.reset_parameters(11)  # the same initialisation as archc.compile(..., seed=11)
fresh.eval()
with torch.no_grad():
    torch.save(fresh(x), "y_seeded.pt")
print("params", sum(p.numel() for p in model.parameters()))
"""


def _emit(spec: Path, out: Path) -> None:
    messages: list[str] = []
    code = run(["compile", str(spec), "--emit", "torch", "-o", str(out)], handler=messages.append)
    assert code == 0, messages
    assert out.exists()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.mark.parametrize("name", EMITTED)
def test_emitted_model_matches_compiled(name: str, tmp_path: Path) -> None:
    spec = SPECS / name
    _emit(spec, tmp_path / "model.py")

    torch.manual_seed(0)
    model = archc.compile(spec, seed=11).eval()
    x = torch.randint(0, model.spec.vocab, (2, 16))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x)

    res = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    got = torch.load(tmp_path / "y.pt")
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= 1e-6, f"max abs error {err:.3e}"
    seeded = torch.load(tmp_path / "y_seeded.pt")
    assert (seeded - expected).abs().max().item() <= 1e-6
    assert f"params {sum(p.numel() for p in model.parameters())}" in res.stdout


def _imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a standalone file"
            roots.add((node.module or "").split(".")[0])
    return roots


@pytest.mark.parametrize("name", EMITTED)
def test_emitted_model_imports_only_torch_and_stdlib(name: str, tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    _emit(SPECS / name, out)
    source = out.read_text()
    roots = _imported_roots(source)
    assert "torch" in roots
    foreign = {r for r in roots if r != "torch" and r not in sys.stdlib_module_names}
    assert not foreign, f"emitted model.py imports {sorted(foreign)}"
    # Also no dynamic imports of archc hiding in the text.
    assert "import archc" not in source and "__import__" not in source
    assert "importlib" not in roots
