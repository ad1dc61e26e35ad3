"""The rewrite passes (canonicalize, const-fold, cse, dce, tie-weights) on hand-made graphs,
checked against hand-computed values and plain torch expressions."""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import archc
from archc.backends.torch.compiled import compile_graph
from archc.backends.torch.emit import emit_torch
from archc.ir.cost import model_cost
from archc.ir.graph import Graph
from archc.ir.printer import print_graph
from archc.ir.types import ParamSpec, TensorType
from archc.ir.verify import VerifyError, verify
from archc.passes.dce import dce_graph
from archc.passes.pipeline import format_pipeline, parse_pipeline, run_pipeline

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "property"))
from graphgen import Maker  # noqa: E402

MINE = "canonicalize,const-fold,cse,tie-weights,dce"
BUILDER_SPEC = """model: canon
vocab: 16
d_model: 8
layers:
  - embed
  - act: identity
  - residual: [{norm: {kind: rms, affine: false}}, {act: silu}, {dropout: 0.0}]
  - dropout: 0.1
  - head: {tied: true}
"""


def run1(name: str, graph: Graph) -> Graph:
    (p,) = parse_pipeline(name)
    out = p.run(graph).graph
    verify(out, after=name)
    return out


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.walk()]


# A fixed float64 (B, T, D) = (2, 3, 8) input.
X = torch.arange(48, dtype=torch.float64).reshape(2, 3, 8) / 10 - 2


# -- canonicalize --------------------------------------------------------------------
def test_canonicalize_folds_what_the_builder_emits() -> None:
    g = archc.to_graph(BUILDER_SPEC)
    assert ops(g).count("dropout") == 2 and "pointwise" in ops(g)
    train = run1("canonicalize", g)
    drops = [n.attrs["p"] for n in train.walk() if n.op == "dropout"]
    assert drops == [0.1]  # p=0 folded, p=0.1 kept for training
    assert not any(n.op == "pointwise" and n.attrs["fn"] == "identity" for n in train.walk())
    evaluation = run1("canonicalize{training=false}", g)
    assert "dropout" not in ops(evaluation)
    tokens = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(0))
    before = compile_graph(g).eval()
    after = compile_graph(evaluation).eval()
    after.load_state_dict(before.state_dict())
    torch.testing.assert_close(after(tokens), before(tokens))


def test_canonicalize_does_not_mutate_its_input() -> None:
    g = archc.to_graph(BUILDER_SPEC)
    text = print_graph(g)
    run1("canonicalize{training=false}", g)
    assert print_graph(g) == text


def test_binary_identities_and_scale_chains() -> None:
    m = Maker()
    one, zero = m.add("const", {"value": 1.0}, m.x), m.add("const", {"value": 0.0}, m.x)
    a = m.add("binary", {"fn": "add"}, m.add("binary", {"fn": "mul"}, one, m.x), zero)
    b = m.add("binary", {"fn": "mul"}, a, m.add("const", {"value": -2.0}, m.x))
    c = m.add("scale", {"factor": 0.25}, m.add("scale", {"factor": 3.0}, b))
    out = m.add("binary", {"fn": "sub"}, c, zero)
    g = run1("canonicalize", m.finish(out))
    assert [n.op for n in g.nodes()] == ["input", "scale"]
    (s,) = [n for n in g.nodes() if n.op == "scale"]
    assert s.attrs["factor"] == -1.5  # -2 * 3 * 0.25
    model = compile_graph(g).double().eval()
    torch.testing.assert_close(model(X), -1.5 * X)


def test_rewritten_node_keeps_its_loc_and_path() -> None:
    m = Maker()
    inner = m.add("scale", {"factor": 2.0}, m.x)
    outer = m.add("scale", {"factor": 5.0}, inner)
    g0 = m.finish(m.add("pointwise", {"fn": "tanh"}, outer))
    want = g0.node(outer.node)
    g = run1("canonicalize", g0)
    (s,) = [n for n in g.nodes() if n.op == "scale"]
    assert (s.path, s.loc, s.attrs["factor"]) == (want.path, want.loc, 10.0)
    assert s.loc is not None and s.loc.line == 2


@pytest.mark.parametrize(
    ("p", "q"),
    [
        (p, q)
        for p, q in itertools.product(itertools.permutations(range(3)), repeat=2)
        if (p, q) in {((1, 2, 0), (1, 2, 0)), ((2, 0, 1), (1, 2, 0)), ((0, 2, 1), (1, 0, 2))}
    ],
)
def test_rearrange_chains_compose_like_torch(p: tuple, q: tuple) -> None:
    m = Maker()
    y = m.add("rearrange", {"perm": p}, m.add("reshape", {"shape": (2, 2, 2)}, m.x))
    out = m.add("reshape", {"shape": (8,)}, m.add("rearrange", {"perm": q}, y))
    g = run1("canonicalize", m.finish(out))
    perms = [n.attrs["perm"] for n in g.nodes() if n.op == "rearrange"]
    composed = X.reshape(2, 3, 2, 2, 2).permute(0, 1, *(i + 2 for i in p))
    composed = composed.permute(0, 1, *(i + 2 for i in q)).reshape(2, 3, 8)
    if composed.equal(X):  # an inverse pair: nothing left
        assert perms == [] and ops(g) == ["input"]
    else:
        assert len(perms) == 1
    torch.testing.assert_close(compile_graph(g).double().eval()(X), composed)


def test_inverse_rearrange_pair_and_reshape_chain_vanish() -> None:
    m = Maker()
    y = m.add("reshape", {"shape": (4, 2)}, m.add("reshape", {"shape": (2, 4)}, m.x))
    y = m.add("rearrange", {"perm": (1, 0)}, m.add("rearrange", {"perm": (1, 0)}, y))
    g = run1("canonicalize", m.finish(m.add("reshape", {"shape": (8,)}, y)))
    assert ops(g) == ["input"] and g.outputs == [g.node(g.inputs[0]).out()]


def test_single_split_and_identity_in_a_loop_region_fold() -> None:
    m = Maker()
    body = Maker("body", prefix="body.")
    h = body.add("pointwise", {"fn": "identity"}, body.x)
    h = body.add("split", {"sizes": (8,)}, h)
    region = body.finish(body.add("linear", {"out": 8}, h))
    g = run1("canonicalize", m.finish(m.add("loop", {"steps": 2}, m.x, regions=(region,))))
    (loop,) = [n for n in g.nodes() if n.op == "loop"]
    assert [n.op for n in loop.regions[0].nodes()] == ["input", "linear"]


# -- const-fold ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "attrs", "c", "expected"),
    [
        ("pointwise", {"fn": "gelu"}, 1.0, 0.8413447460685429),  # Phi(1)
        ("pointwise", {"fn": "silu"}, 2.0, 2.0 / (1.0 + math.exp(-2.0))),
        ("pointwise", {"fn": "sigmoid"}, 0.0, 0.5),
        ("pointwise", {"fn": "relu"}, -3.0, 0.0),
        ("pointwise", {"fn": "tanh"}, 0.5, 0.46211715726000974),
        ("scale", {"factor": -0.5}, 3.0, -1.5),
        ("norm", {"kind": "rms", "affine": False}, 2.0, 2.0 / math.sqrt(4.0 + 1e-5)),
        ("norm", {"kind": "layer", "affine": False}, 7.0, 0.0),
    ],
)
def test_const_fold_values(op: str, attrs: dict, c: float, expected: float) -> None:
    m = Maker()
    g0 = m.finish(m.add(op, attrs, m.add("const", {"value": c}, m.x)))
    g = run1("const-fold", g0)
    (k,) = [n for n in g.nodes() if n.op != "input"]
    assert k.op == "const" and k.attrs["value"] == pytest.approx(expected, abs=1e-15)
    # The torch model of the unfolded graph agrees (the fold matches the lowering).
    torch.testing.assert_close(compile_graph(g0).double().eval()(X), torch.full_like(X, expected))


def test_const_fold_binary_then_identity() -> None:
    m = Maker()
    two, three = m.add("const", {"value": 2.0}, m.x), m.add("const", {"value": 3.0}, m.x)
    one = m.add("const", {"value": 1.0}, m.x)
    zero = m.add("binary", {"fn": "sub"}, three, m.add("binary", {"fn": "add"}, two, one))
    out = m.add("binary", {"fn": "add"}, m.add("pointwise", {"fn": "relu"}, m.x), zero)
    g = run1("const-fold", m.finish(out))
    assert [n.op for n in g.nodes()] == ["input", "pointwise"]  # relu(x) + (3 - (2 + 1))


def test_const_fold_leaves_overflow_unfolded() -> None:
    m = Maker()
    big = m.add("scale", {"factor": 1e300}, m.add("const", {"value": 1e300}, m.x))
    g = run1("const-fold", m.finish(big))
    assert "scale" in ops(g)


# -- cse -----------------------------------------------------------------------------
def test_cse_merges_parameter_free_subgraphs_only() -> None:
    m = Maker()
    plain = {"kind": "layer", "affine": False}
    a = m.add("pointwise", {"fn": "gelu"}, m.add("norm", plain, m.x))
    b = m.add("pointwise", {"fn": "gelu"}, m.add("norm", plain, m.x))
    w1, w2 = m.add("linear", {"out": 8}, m.x), m.add("linear", {"out": 8}, m.x)
    d1, d2 = m.add("dropout", {"p": 0.5}, m.x), m.add("dropout", {"p": 0.5}, m.x)
    out = m.add("binary", {"fn": "add"}, a, b)
    for v in (w1, w2, d1, d2):
        out = m.add("binary", {"fn": "add"}, out, v)
    g0 = m.finish(out)
    g = run1("cse", g0)
    counts = {op: ops(g).count(op) for op in ("norm", "pointwise", "linear", "dropout")}
    assert counts == {"norm": 1, "pointwise": 1, "linear": 2, "dropout": 2}
    kept = next(n for n in g.nodes() if n.op == "norm")
    first = g0.node(g0.node(a.node).inputs[0].node)
    assert (kept.path, kept.loc) == (first.path, first.loc)  # the first one is kept
    before = compile_graph(g0).double().eval()
    after = compile_graph(g).double().eval()
    after.load_state_dict(before.state_dict())
    torch.testing.assert_close(after(X), before(X))


def test_cse_does_not_merge_across_regions() -> None:
    m = Maker()
    body = Maker("body", prefix="body.")
    region = body.finish(body.add("pointwise", {"fn": "relu"}, body.x))
    x = m.add("pointwise", {"fn": "relu"}, m.x)
    loop = m.add("loop", {"steps": 1}, x, regions=(region,))
    g = run1("cse", m.finish(m.add("binary", {"fn": "add"}, loop, x)))
    assert ops(g).count("pointwise") == 2


# -- dce -----------------------------------------------------------------------------
def test_dce_removes_dead_parameters_and_keeps_interfaces() -> None:
    m = Maker()
    m.add("linear", {"out": 8, "bias": True}, m.x)  # dead: 72 parameters
    body = Maker("body", prefix="body.")
    body.add("pointwise", {"fn": "relu"}, body.x)  # dead inside the region
    region = body.finish(body.x)  # the region input is its output: kept
    g0 = m.finish(m.add("loop", {"steps": 1}, m.x, regions=(region,)))
    g = run1("dce", g0)
    assert model_cost(g0).parameters - model_cost(g).parameters == 72
    assert ops(g) == ["input", "loop", "input"]
    assert compile_graph(g).num_parameters() == 0


def test_dce_keeps_linears_of_lora_loops() -> None:
    body = Maker("body", prefix="body.")
    body.add("linear", {"out": 8}, body.x)
    region = body.finish(body.x)
    assert not dce_graph(region.copy(), set(), lora=True)
    assert dce_graph(region.copy(), set(), lora=False)


def test_dce_keeps_every_real_spec_whole() -> None:
    for spec in sorted((REPO / "specs").glob("*.yaml")):
        g = archc.to_graph(spec)
        assert print_graph(run1("dce", g)) == print_graph(g), spec.name


# -- tie-weights ---------------------------------------------------------------------
def test_tied_head_shares_the_embedding_and_counts_it_once() -> None:
    g = run_pipeline(archc.to_graph(REPO / "specs" / "gpt.yaml"), MINE, verify_each=True).graph
    model = compile_graph(g).eval()
    assert sum(p.numel() for p in model.parameters()) == model_cost(g).parameters
    assert not any(k.startswith("layers.4.head") for k in model.state_dict())
    with torch.no_grad():  # zero the embedding: the tied head then outputs exactly 0
        model.get_submodule("layers.0.embed").weight.zero_()
        y = model(torch.zeros(1, 3, dtype=torch.long))
    assert y.abs().max().item() == 0.0


def test_tie_weights_rejects_a_mismatched_tie() -> None:
    g = archc.to_graph(BUILDER_SPEC)
    head = next(n for n in g.nodes() if n.attrs.get("weight_from"))
    bad = g.copy()
    bad.replace(
        replace(
            head,
            attrs=head.attrs.replace(out=12),
            outputs=(TensorType(("B", "T", 12)),),
        )
    )
    with pytest.raises(VerifyError, match=r"does not fit the \(vocab, dim\)=\(16, 8\)"):
        run1("tie-weights", bad)


def test_tie_weights_drops_a_duplicate_weight_spec() -> None:
    g = archc.to_graph(BUILDER_SPEC)
    head = next(n for n in g.nodes() if n.attrs.get("weight_from"))
    dup = g.copy()
    dup.replace(replace(head, params=(ParamSpec("weight", (16, 8), "uniform(0.35)"),)))
    with pytest.raises(VerifyError):
        verify(dup)
    fixed = run1("tie-weights", dup)
    assert model_cost(fixed).parameters == model_cost(g).parameters == 16 * 8


# -- all together --------------------------------------------------------------------
def test_pipeline_on_every_spec_verifies_and_is_idempotent() -> None:
    for spec in sorted([*(REPO / "specs").glob("*.yaml"), *(REPO / "specs").glob("*.arch")]):
        g = archc.to_graph(spec)
        once = run_pipeline(g, MINE, verify_each=True)
        twice = run_pipeline(once.graph, MINE, verify_each=True)
        assert print_graph(twice.graph) == print_graph(once.graph), spec.name
        assert not any(changed for _, changed in twice.log), spec.name
        assert model_cost(once.graph).parameters == model_cost(g).parameters, spec.name


def test_pass_options_parse_and_print() -> None:
    passes = parse_pipeline("canonicalize{training=false},const-fold,cse,tie-weights,dce")
    assert format_pipeline(passes) == "canonicalize{training=False},const-fold,cse,tie-weights,dce"


def test_emitted_standalone_model_runs_the_new_ops() -> None:
    m = Maker("emitted")
    y = m.add("rearrange", {"perm": (1, 0)}, m.add("reshape", {"shape": (2, 4)}, m.x))
    y = m.add("scale", {"factor": 2.0}, m.add("reshape", {"shape": (8,)}, y))
    y = m.add("binary", {"fn": "add"}, y, m.add("const", {"value": 0.5}, m.x))
    g = m.finish(m.add("linear", {"out": 4}, y))
    compiled = compile_graph(g).double().eval()
    namespace: dict[str, object] = {"__name__": "emitted_model"}
    exec(compile(emit_torch(g), "<emitted>", "exec"), namespace)  # our own generated code
    standalone = namespace["Model"]().double().eval()  # type: ignore[operator]
    standalone.load_state_dict(compiled.state_dict())
    expected = torch.nn.functional.linear(
        2.0 * X.reshape(2, 3, 2, 4).transpose(-1, -2).reshape(2, 3, 8) + 0.5,
        compiled.state_dict()["n6.linear.weight"],
        compiled.state_dict()["n6.linear.bias"],
    )
    torch.testing.assert_close(standalone(X), expected)
    torch.testing.assert_close(compiled(X), expected)
