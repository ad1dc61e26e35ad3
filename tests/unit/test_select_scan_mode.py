"""The select-scan-mode pass: its rule table, its rewrite (regions included, input
untouched, fixed modes kept), and a semantic check that the chosen modes compute the
same model."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.ir.graph import Graph
from archc.ir.printer import print_graph, structural_hash
from archc.passes.select_scan_mode import SHORT_T, SelectScanMode, select_scan_mode

SPEC = """
model: modes
vocab: 16
d_model: 8
layers:
  - embed
  - mingru: {hidden: 8}
  - gru: {recurrent: diagonal}
  - gla: {heads: 2, chunk: 8}
  - loop: {steps: 2, tie: all, body: [{ssm: {kind: s4d, state: 4}}]}
  - lstm: {hidden: 8}
  - minlstm: {hidden: 8, mode: associative}
  - head
"""


@pytest.mark.parametrize(
    ("cell", "seq_len", "device", "mode"),
    [
        ("lstm", 4096, "cuda", "sequential"),
        ("leaky_tanh", 4096, "cpu", "sequential"),
        ("lru", 4096, "cuda", "sequential"),
        ("mingru", None, "cpu", "auto"),
        ("mingru", SHORT_T, "cpu", "sequential"),
        ("mingru", SHORT_T + 1, "cpu", "chunked"),
        ("selective", 4096, "cuda", "chunked"),
        ("gla", 4096, "cpu", "chunked"),
        ("delta", 8, "cuda", "sequential"),
        ("diag_gru", 4096, "cpu", "sequential"),
        ("diag_gru", 4096, "cuda", "newton"),
        ("diag_gru", 32, "cuda", "sequential"),
    ],
)
def test_rule_table(cell: str, seq_len: int | None, device: str, mode: str) -> None:
    chosen, reason = select_scan_mode(cell, seq_len, device)
    assert chosen == mode and reason


def _modes(graph: Graph) -> dict[str, str]:
    return {n.path: n.attrs["mode"] for n in graph.walk() if n.op == "scan"}


def test_pass_rewrites_auto_only_and_copies() -> None:
    graph = archc.to_graph(SPEC)
    before_text, before_hash = print_graph(graph), structural_hash(graph)
    result = SelectScanMode(seq_len=256, device="cuda").run(graph)
    assert result.changed
    assert print_graph(graph) == before_text and structural_hash(graph) == before_hash
    modes = _modes(result.graph)
    assert modes["layers.1.mingru"] == "chunked"
    assert modes["layers.2.gru"] == "newton"
    assert modes["layers.3.gla"] == "chunked"
    # Inside the loop's region too.
    assert [m for p, m in modes.items() if "ssm" in p] == ["chunked"]
    assert modes["layers.5.lstm"] == "sequential"
    assert modes["layers.6.minlstm"] == "associative"  # fixed by the spec: kept
    # The chosen graph verifies and prints deterministically.
    assert print_graph(result.graph) == print_graph(
        SelectScanMode(seq_len=256, device="cuda").run(graph).graph
    )


def test_unknown_length_leaves_auto() -> None:
    graph = archc.to_graph(SPEC)
    result = SelectScanMode(seq_len=None, device="cpu").run(graph)
    assert _modes(result.graph)["layers.1.mingru"] == "auto"
    rows = {p: (m, why) for p, m, why in SelectScanMode(None, "cpu").report(graph)}
    assert rows["layers.6.minlstm"] == ("associative", "fixed by the spec")
    assert rows["layers.1.mingru"][0] == "auto"


def test_chosen_modes_compute_the_same_model() -> None:
    """Semantic check: the model compiled with modes chosen for CPU at T=40 matches the
    one that decides at run time and one forced to the sequential reference."""
    torch.manual_seed(0)
    x = torch.randint(0, 16, (2, 40))
    plain = archc.compile(SPEC, seed=3)
    chosen = archc.compile(SPEC, seed=3, device="cpu", seq_len=40)
    assert chosen.spec_hash == plain.spec_hash
    assert _modes(chosen.graph)["layers.1.mingru"] == "chunked"
    seq = archc.compile(SPEC.replace("mode: associative", "mode: sequential"), seed=3)
    with torch.no_grad():
        ref = seq(x).double()
        for model in (plain, chosen):
            assert torch.allclose(model(x).double(), ref, atol=1e-5, rtol=1e-4)


def test_info_reports_modes_then_kernels(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`archc info --device` shows each scan's chosen mode, and assigns kernels to the
    graph after the choice (a chunked scan on CUDA gets the diag_scan kernel)."""
    import json

    from archc.cli import run

    spec = tmp_path / "modes.yaml"
    spec.write_text(SPEC)
    assert run(["info", str(spec), "--device", "cuda", "--seq-len", "4096"]) == 0
    out = capsys.readouterr().out
    assert "scan modes on cuda at T=4096:" in out
    assert run(["info", str(spec), "--device", "cuda", "--seq-len", "4096", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scan_modes"]["layers.1.mingru"]["mode"] == "chunked"
    assert data["scan_modes"]["layers.2.gru"]["mode"] == "newton"
    assert data["scan_modes"]["layers.6.minlstm"] == {
        "mode": "associative",
        "reason": "fixed by the spec",
    }
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        assert data["kernels"]["layers.1.mingru"]["kernel"] == "diag_scan"
