"""The memory and titans spec components: errors point at the spec's line, the matrix
and token stores lower to their oracles' layers, every memory model is causal, and the
standalone model.py reproduces the compiled memory models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import archc
from archc.cli import run

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _spec(layer: dict, tmp_path: Path) -> Path:
    text = yaml.safe_dump(
        {"model": "m", "vocab": 16, "d_model": 16, "layers": ["embed", layer, "head"]},
        sort_keys=False,
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"memory": {"store": "matrix", "depth": 2}}, "'depth' applies to store: mlp only"),
        ({"memory": {"store": "mlp", "write": "delta"}}, "written by grad, not 'delta'"),
        ({"memory": {"store": "tokens", "read": "apply"}}, "read by 'attend', not 'apply'"),
        ({"memory": {"heads": 3}}, "heads=3 must divide the width 16"),
        ({"memory": {"depth": 3}}, "less than or equal to 2"),
        ({"titans": {"variant": "mac", "window": 8}}, "'window' does not apply to variant mac"),
        ({"titans": {"variant": "mag", "persist": 2}}, "'persist' applies to variant mac only"),
        ({"titans": {"variant": "mem"}}, "variant"),
    ],
)
def test_spec_errors_point_at_the_line(layer: dict, message: str, tmp_path: Path) -> None:
    path = _spec(layer, tmp_path)
    messages: list[str] = []
    assert run(["check", str(path)], handler=messages.append) == 2
    text = "\n".join(messages)
    assert f"{path}:" in text and "error:" in text and message in text, text


def test_matrix_and_token_stores_lower_to_delta_gla_and_attention(tmp_path: Path) -> None:
    ops = {}
    for name, layer in {
        "delta": {"memory": {"store": "matrix", "heads": 4}},
        "gla": {"memory": {"store": "matrix", "write": "add", "heads": 4}},
        "tokens": {"memory": {"store": "tokens", "n": 8, "heads": 4}},
    }.items():
        g = archc.to_graph(_spec(layer, tmp_path))
        ops[name] = [(n.op, n.attrs.get("cell"), n.attrs.get("window")) for n in g.nodes()]
    assert ("scan", "delta", None) in ops["delta"]
    assert ("scan", "gla", None) in ops["gla"]
    assert ("attention", None, 8) in ops["tokens"]


@pytest.mark.parametrize(
    "layer",
    [
        {"memory": {"store": "mlp", "chunk": 4, "window": 3}},
        {"memory": {"store": "mlp", "depth": 1, "mode": "sequential"}},
        {"memory": {"store": "matrix", "chunk": 4}},
        {"memory": {"store": "tokens", "n": 4}},
        {"titans": {"variant": "mac", "chunk": 4}},
        {"titans": {"variant": "mag", "chunk": 4, "window": 5}},
        {"titans": {"variant": "mal", "chunk": 4, "window": 5, "omega": 2}},
    ],
)
def test_memory_models_are_causal(layer: dict, tmp_path: Path) -> None:
    """Changing token t leaves every output before t unchanged."""
    model = archc.compile(_spec(layer, tmp_path), seed=0).double().eval()
    x = torch.randint(0, 16, (2, 13))
    x2 = x.clone()
    x2[:, 6] = (x2[:, 6] + 1) % 16
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6], rtol=0, atol=1e-12)
    assert (y[:, 6:] - y2[:, 6:]).abs().max() > 1e-9


@pytest.mark.parametrize("name", ["titans-mac.yaml", "titans-mag.yaml", "atlas.yaml"])
def test_streamed_chunks_equal_the_whole_sequence(name: str) -> None:
    """Fed a few tokens at a time (state carried), the outputs equal one full forward:
    the unfinished chunk is re-run from the memory at its start."""
    model = archc.compile(SPECS / name, seed=0).double().eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randint(0, 64, (2, 37))
    with torch.no_grad():
        full = model(x)
        ys, state, i = [], None, 0
        for size in [1, 5, 16, 2, 13]:
            y, state = model(x[:, i : i + size], state=state, return_state=True)
            ys.append(y)
            i += size
    torch.testing.assert_close(torch.cat(ys, 1), full, rtol=0, atol=1e-10)


_RUNNER = """
import sys
sys.modules["archc"] = None
import torch
from model import Model
model = Model()
model.load_state_dict(torch.load("state.pt"))
model.eval()
with torch.no_grad():
    torch.save(model(torch.load("x.pt")), "y.pt")
"""


@pytest.mark.parametrize("name", ["titans-mac.yaml", "atlas.yaml"])
def test_emitted_memory_model_matches_compiled(name: str, tmp_path: Path) -> None:
    messages: list[str] = []
    out = tmp_path / "model.py"
    assert (
        run(
            ["compile", str(SPECS / name), "--emit", "torch", "-o", str(out)],
            handler=messages.append,
        )
        == 0
    ), messages
    model = archc.compile(SPECS / name, seed=3).eval()
    x = torch.randint(0, 64, (2, 20))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    with torch.no_grad():
        expected = model(x)
    assert (torch.load(tmp_path / "y.pt") - expected).abs().max().item() <= 1e-6
