"""Kernel rules (backends/triton/rules.py): which Triton kernel each scan node gets on a
device, and the reason when none does. The device is only a name: no GPU needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from archc.api import to_graph
from archc.backends.triton.rules import KERNELS, assign_kernels, can_lower, rule_for
from archc.cli import run
from archc.ir.graph import Node
from archc.ir.types import Attrs

SPECS = Path(__file__).resolve().parents[2] / "specs"

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")

_BASE = {
    "bias": True,
    "bidirectional": False,
    "block": None,
    "chunk": None,
    "heads": None,
    "hidden": 32,
    "iters": None,
    "layers": 1,
    "mode": "sequential",
    "state": None,
    "tol": None,
}


def _scan(cell: str, **attrs: object) -> Node:
    return Node(0, "scan", Attrs({**_BASE, "cell": cell, **attrs}), (), (), path="layers.1.x")


def test_every_kernel_cell_has_one_rule() -> None:
    cells = [c for r in KERNELS for c in r.cells]
    assert len(cells) == len(set(cells))
    assert rule_for("lstm").name == "rnn_cells.lstm"  # type: ignore[union-attr]
    assert rule_for("leaky_relu").name == "rnn_cells.leaky"  # type: ignore[union-attr]
    assert rule_for("selective").name == "diag_scan"  # type: ignore[union-attr]
    assert rule_for("gla").name == "gla_scan"  # type: ignore[union-attr]
    assert rule_for("delta").name == "delta_scan"  # type: ignore[union-attr]
    assert rule_for("rnn_tanh") is None


def test_reasons_without_a_kernel() -> None:
    ok, why = can_lower(_scan("rnn_tanh"), "cuda")
    assert not ok and "no Triton kernel" in why and "nn.RNN" in why
    ok, why = can_lower(_scan("lstm"), "cpu")
    assert not ok and "device is cpu" in why
    ok, why = can_lower(Node(0, "linear", Attrs(), (), ()), "cuda")
    assert not ok and "only scans" in why


@needs_triton
def test_rnn_cell_rules() -> None:
    assert can_lower(_scan("lstm", layers=3), "cuda") == (True, "ok")
    assert can_lower(_scan("gru", hidden=64), "cuda:0") == (True, "ok")
    ok, why = can_lower(_scan("lstm", hidden=65), "cuda")
    assert not ok and "hidden size 65 > 64" in why
    ok, why = can_lower(_scan("gru", bidirectional=True), "cuda")
    assert not ok and "bidirectional" in why
    # The leaky kernel runs once LeakyRNN.forward calls fused_leaky_rnn (cells.py).
    ok, why = can_lower(_scan("leaky_tanh"), "cuda")
    assert ok or "fused_leaky_rnn" in why
    ok, why = can_lower(_scan("leaky_relu", hidden=128), "cuda")
    assert not ok and "hidden size" in why


@needs_triton
def test_scan_kernel_rules() -> None:
    assert can_lower(_scan("mingru", mode="auto"), "cuda") == (True, "ok")
    assert can_lower(_scan("s4d_zoh", mode="auto", state=16), "cuda") == (True, "ok")
    assert can_lower(_scan("selective", mode="chunked", state=16), "cuda") == (True, "ok")
    ok, why = can_lower(_scan("selective", mode="associative", state=16), "cuda")
    assert not ok and "mode 'associative'" in why
    ok, why = can_lower(_scan("gla", mode="chunked", heads=1, hidden=256), "cuda")
    assert not ok and "dk=256 > 128" in why
    ok, why = can_lower(_scan("gla", mode="sequential", heads=2), "cuda")
    assert not ok and "sequential" in why
    assert can_lower(_scan("gla", mode="chunked", heads=2), "cuda") == (True, "ok")
    assert can_lower(_scan("delta", mode="chunked", heads=2), "cuda") == (True, "ok")
    ok, why = can_lower(_scan("aaren", mode="auto", heads=2), "cuda")
    assert not ok and "associative scan" in why


@needs_triton
def test_assign_kernels_on_specs() -> None:
    small = to_graph(SPECS / "lstm.yaml", ["layers[1].lstm.hidden=64"])
    assert assign_kernels(small, "cuda") == {"layers.1.lstm": ("rnn_cells.lstm", "ok")}
    big = assign_kernels(to_graph(SPECS / "lstm.yaml"), "cuda")
    assert big["layers.1.lstm"][0] is None and "hidden size 128" in big["layers.1.lstm"][1]
    on_cpu = assign_kernels(small, "cpu")
    assert on_cpu["layers.1.lstm"] == (None, "device is cpu, the kernels need CUDA")


def test_info_prints_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["info", str(SPECS / "lstm.yaml"), "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "kernels on cuda:" in out and "layers.1.lstm" in out
    assert run(["info", str(SPECS / "lstm.yaml"), "--device", "cpu", "--json"]) == 0
    assert '"kernels"' in capsys.readouterr().out
    assert run(["info", str(SPECS / "lstm.yaml")]) == 0
    assert "kernels on" not in capsys.readouterr().out
