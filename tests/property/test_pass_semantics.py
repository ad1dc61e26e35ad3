"""Semantic preservation of the rewrite passes on random graphs (graphgen.py).

For each pass alone and for the -O2 list of the passes that exist: the model of the
graph after the pass computes what the model before computed, to 1e-6 in float64, in
eval mode, with the same parameters (the after-model's state_dict is copied from the
before-model's by path; a pass may drop parameters, never add or rename one). Each
pass is idempotent (a second run prints the same IR and reports no change), keeps the
source location of every node it keeps or rewrites, and leaves a verified graph.
"""

from __future__ import annotations

import pytest
import torch
from graphgen import graphs, shuffle_chains
from hypothesis import HealthCheck, given, settings

from archc.backends.torch.compiled import compile_graph
from archc.ir.graph import Graph
from archc.ir.printer import print_graph
from archc.ir.verify import verify
from archc.passes.pipeline import O2, PASSES, parse_pipeline, run_pipeline

# Every registered pass, alone (the rewrites, fuse-pointwise, and the passes that only
# annotate or check: shapes, verify, select-scan-mode, assign-kernels).
EACH = [
    "canonicalize",
    "canonicalize{training=false}",
    "const-fold",
    "cse",
    "tie-weights",
    "dce",
    "fuse-pointwise",
    "fuse-pointwise{max_ops=2}",
    "shapes",
    "verify",
    "select-scan-mode{seq_len=64}",
    "assign-kernels{device=cuda}",
]
O2_ORDER = [
    "canonicalize",
    "const-fold",
    "cse",
    "tie-weights",
    "dce",
    "fuse-pointwise",
    "dce",
    "select-scan-mode",
    "assign-kernels",
]
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def o2_available() -> str:
    """The -O2 pipeline; every pass of it must be registered."""
    parse_pipeline("")  # loads the built-in passes
    assert all(p in PASSES for p in O2_ORDER), sorted(set(O2_ORDER) - set(PASSES))
    assert ",".join(O2_ORDER) == O2
    return O2


def outputs(before: Graph, after: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models on one float64 input, after-model parameters copied by path."""
    m_before = compile_graph(before, seed=0).double().eval()
    m_after = compile_graph(after, seed=1).double().eval()
    sd_before, sd_after = m_before.state_dict(), m_after.state_dict()
    assert set(sd_after) <= set(sd_before), f"new parameters: {set(sd_after) - set(sd_before)}"
    m_after.load_state_dict({k: sd_before[k] for k in sd_after})
    x = torch.randn(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return m_before(x), m_after(x)


def check_locs(before: Graph, after: Graph) -> None:
    """Every node the pass kept or rewrote keeps its path's source location."""
    locs = {n.path: n.loc for n in before.walk()}
    for node in after.walk():
        assert node.path in locs, f"new node path {node.path}"
        assert node.loc == locs[node.path], node.path


@pytest.mark.parametrize("pipeline", [*EACH, "O2"])
@SETTINGS
@given(graph=graphs())
def test_pass_preserves_semantics(pipeline: str, graph: Graph) -> None:
    verify(graph)
    text = o2_available() if pipeline == "O2" else pipeline
    after = run_pipeline(graph, text, verify_each=True, context={"device": "cpu"}).graph
    check_locs(graph, after)
    y_before, y_after = outputs(graph, after)
    torch.testing.assert_close(y_after, y_before, atol=1e-6, rtol=0)


@SETTINGS
@given(graph=shuffle_chains())
def test_chains_fold_to_one_node_each_and_keep_semantics(graph: Graph) -> None:
    after = run_pipeline(graph, "canonicalize", verify_each=True).graph
    kinds = [n.op for n in after.nodes()]
    assert kinds.count("rearrange") <= 1 and kinds.count("scale") <= 1
    y_before, y_after = outputs(graph, after)
    torch.testing.assert_close(y_after, y_before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", EACH)
@SETTINGS
@given(graph=graphs())
def test_pass_is_idempotent(name: str, graph: Graph) -> None:
    (p,) = parse_pipeline(name)
    before = print_graph(graph)
    once = p.run(graph)
    assert print_graph(graph) == before, "the pass mutated its input"
    twice = p.run(once.graph)
    assert print_graph(twice.graph) == print_graph(once.graph)
    assert not twice.changed


@SETTINGS
@given(graph=graphs())
def test_passes_shrink_the_random_graphs(graph: Graph) -> None:
    """The -O2 rewrites leave no pattern they fold (an independent scan of the result)."""
    after = run_pipeline(graph, "canonicalize,const-fold,cse,dce", verify_each=True).graph
    for node in after.walk():
        assert not (node.op == "pointwise" and node.attrs["fn"] == "identity")
        assert not (node.op == "dropout" and node.attrs["p"] == 0.0)
        assert not (node.op == "scale" and node.attrs["factor"] == 1.0)
        assert not (node.op == "rearrange" and node.attrs["perm"] == tuple(range(2)))
    for g in [after, *(r for n in after.walk() for r in n.regions)]:
        for node in g.nodes():
            users = g.users(node.id)
            is_out = any(v.node == node.id for v in g.outputs)
            assert users or is_out or node.id in g.inputs, f"dead %{node.id} {node.op}"
            if node.op in ("scale", "rearrange", "reshape", "const"):
                assert g.node(node.inputs[0].node).op != node.op, f"unfolded {node.op} chain"
            # After cse no two parameter-free nodes compute the same thing.
        keys = [
            (n.op, n.attrs, n.inputs)
            for n in g.nodes()
            if not n.params and not n.regions and n.op not in ("input", "dropout")
        ]
        assert len(keys) == len(set(keys)), "duplicate left after cse"
