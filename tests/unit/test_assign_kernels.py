"""The assign-kernels pass: what it records in the IR on CPU and on "cuda" (the rules
are static: no GPU needed), the --explain rows, and that the torch lowering ignores
the recorded attribute."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.ir.graph import Graph
from archc.ir.printer import print_graph, structural_hash
from archc.ir.verify import verify
from archc.passes.assign_kernels import AssignKernels, explain
from tests.conftest import SPECS

SPEC = """
model: kern
vocab: 32
d_model: 16
layers:
  - embed
  - mingru: {hidden: 16}
  - lstm: {hidden: 16}
  - lstm: {hidden: 128}
  - gru: {hidden: 16, bidirectional: true}
  - residual: [{norm: layer}, {mlp: {mult: 2, act: gelu}}]
  - head
"""


def _kernels(graph: Graph) -> dict[str, str | None]:
    return {n.path: n.attrs.get("kernel") for n in graph.walk() if n.op == "scan"}


def test_unassigned_graphs_print_as_before() -> None:
    graph = archc.to_graph(SPEC)
    assert "kernel=" not in print_graph(graph)
    assert all(k is None for k in _kernels(graph).values())


def test_cpu_records_the_fallback_on_every_scan() -> None:
    graph = archc.to_graph(SPEC)
    result = AssignKernels(device="cpu").run(graph)
    assert result.changed
    verify(result.graph)
    kernels = _kernels(result.graph)
    assert len(kernels) == 4
    assert all(k == "torch: device is cpu, the kernels need CUDA" for k in kernels.values())
    # Ops without a kernel rule get no attribute; the input graph is untouched.
    assert all("kernel" not in n.attrs for n in result.graph.walk() if n.op != "scan")
    assert "kernel=" not in print_graph(graph)
    assert "kernel='torch: device is cpu" in print_graph(result.graph)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_names_kernels_and_reasons(device: str) -> None:
    graph = AssignKernels(device=device).run(archc.to_graph(SPEC)).graph
    kernels = _kernels(graph)
    assert kernels["layers.1.mingru"] == "diag_scan"
    assert kernels["layers.2.lstm"] == "rnn_cells.lstm"
    assert kernels["layers.3.lstm"].startswith("torch: hidden size 128 > 64")
    assert kernels["layers.4.gru"].startswith("torch: bidirectional")


def test_idempotent_and_hash_of_unassigned_graph_kept() -> None:
    graph = archc.to_graph(SPEC)
    once = AssignKernels(device="cuda").run(graph)
    twice = AssignKernels(device="cuda").run(once.graph)
    assert once.changed and not twice.changed
    assert print_graph(twice.graph) == print_graph(once.graph)
    # A device change rewrites the decision.
    assert AssignKernels(device="cpu").run(once.graph).changed
    assert structural_hash(graph) != structural_hash(once.graph)


def test_explain_has_a_row_per_node() -> None:
    graph = archc.to_graph(SPEC)
    rows = explain(graph, "cuda")
    assert [r.path for r in rows] == [n.path for n in graph.walk()]
    by_path = {r.path: r for r in rows}
    assert by_path["layers.1.mingru"][1:] == ("scan", "diag_scan", "")
    assert by_path["layers.3.lstm"].backend == "torch"
    assert "hidden size 128" in by_path["layers.3.lstm"].reason
    head = next(r for r in rows if r.path.endswith("head"))
    assert (head.op, head.backend, head.reason) == ("linear", "torch", "")
    cpu = explain(graph, "cpu")
    assert {r.backend for r in cpu} == {"torch"}
    assert all("need CUDA" in r.reason for r in cpu if r.op == "scan")


def test_lowering_ignores_the_kernel_attribute() -> None:
    """-O0 (no attribute) and -O2 (attribute set) modules compute the same function."""
    plain = archc.compile(SPEC, seed=3, opt_level=0)
    assigned = archc.compile(SPEC, seed=3, passes="assign-kernels{device=cuda}")
    assert any(n.attrs.get("kernel") == "diag_scan" for n in assigned.graph.walk())
    assert plain.spec_hash == assigned.spec_hash
    x = torch.randint(0, 32, (2, 8))
    with torch.no_grad():
        want, got = plain.eval()(x), assigned.eval()(x)
    assert got.shape == (2, 8, 32)
    assert torch.allclose(got, want, atol=1e-6)


def test_conv_kernel_width_is_not_a_backend_record() -> None:
    """conv1d's `kernel` attribute is its width (an int): the pass leaves it alone."""
    graph = archc.to_graph(SPECS / "conv.yaml")
    widths = {n.path: n.attrs["kernel"] for n in graph.walk() if n.op == "conv1d"}
    assert widths and all(isinstance(w, int) for w in widths.values())
    out = AssignKernels(device="cuda").run(graph).graph
    verify(out)
    assert {n.path: n.attrs["kernel"] for n in out.walk() if n.op == "conv1d"} == widths
    rows = [r for r in explain(graph, "cuda") if r.op == "conv1d"]
    assert rows and all((r.backend, r.reason) == ("torch", "") for r in rows)
