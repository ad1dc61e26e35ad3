"""The fuse-pointwise pass: which groups it fuses (hand-built graphs with hand-written
expected programs), max_ops, idempotence, the specs, and models before / after."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings

from archc.api import to_graph
from archc.backends.torch.compiled import compile_graph
from archc.backends.torch.emit import emit_torch
from archc.backends.torch.lower_fused import function_name, function_source
from archc.backends.triton.rules import can_lower
from archc.ir.graph import Graph, Node, Value
from archc.ir.ops import OPS
from archc.ir.printer import print_graph
from archc.ir.types import Attrs, TensorType
from archc.ir.verify import verify
from archc.passes.fuse_pointwise import FusePointwise
from archc.passes.pipeline import parse_pipeline, run_pipeline

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
D = 8
sys.path.insert(0, str(REPO / "tests" / "property"))
from graphgen import graphs  # noqa: E402


def _add(g: Graph, op: str, inputs: list[Value], path: str, **attrs: object) -> Node:
    opdef = OPS[op]
    a = opdef.with_defaults(dict(attrs))
    ins = [g.type_of(v) for v in inputs]
    return g.add(op, a, inputs, opdef.shape(a, ins), opdef.params(a, ins), path=path)


def _swiglu_block() -> Graph:
    """x -> gate, up (linears) -> silu(gate) * up -> + x -> linear (the output)."""
    g = Graph("t")
    x = g.add("input", Attrs(kind="features", dim=D), [], (TensorType(("B", "T", D)),), path="in")
    g.inputs = [x.id]
    gate = _add(g, "linear", [x.out()], "gate", out=D, bias=False, weight_from=None)
    up = _add(g, "linear", [x.out()], "up", out=D, bias=False, weight_from=None)
    act = _add(g, "pointwise", [gate.out()], "act", fn="silu")
    mul = _add(g, "binary", [act.out(), up.out()], "mul", fn="mul")
    res = _add(g, "binary", [x.out(), mul.out()], "res", fn="add")
    out = _add(g, "linear", [res.out()], "out", out=D, bias=False, weight_from=None)
    g.outputs = [out.out()]
    verify(g)
    return g


def _fused(g: Graph) -> list[Node]:
    return [n for n in g.walk() if n.op == "fused_pointwise"]


def _fused_top(g: Graph) -> list[Node]:
    return [n for n in g.nodes() if n.op == "fused_pointwise"]


def test_swiglu_and_residual_become_one_node() -> None:
    g = _swiglu_block()
    r = FusePointwise().run(g)
    verify(r.graph)
    assert r.changed and len(r.graph) == len(g) - 2
    (node,) = _fused(r.graph)
    # Inputs by first use: gate (0), up (1), x (2); then silu (3), mul (4), add (5).
    assert node.attrs["program"] == (("silu", 0), ("mul", 3, 1), ("add", 2, 4))
    assert node.attrs["kernel"] is None
    assert node.path == "res" and node.params == ()
    ins = [r.graph.node(v.node).path for v in node.inputs]
    assert ins == ["gate", "up", "in"]
    assert print_graph(g) != print_graph(r.graph)  # the input is not mutated
    assert len(g) == 7


def test_value_read_outside_ends_the_group() -> None:
    g = _swiglu_block()
    mul = next(n for n in g.nodes() if n.path == "mul")
    extra = _add(g, "linear", [mul.out()], "extra", out=D, bias=False, weight_from=None)
    g.outputs = [g.outputs[0], extra.out()]
    r = FusePointwise().run(g)
    verify(r.graph)
    # mul is read by `extra`: the add stays alone, silu * up is fused (root mul).
    (node,) = _fused(r.graph)
    assert node.path == "mul" and node.attrs["program"] == (("silu", 0), ("mul", 2, 1))
    assert any(n.path == "res" and n.op == "binary" for n in r.graph.nodes())


def test_graph_output_is_not_swallowed() -> None:
    g = _swiglu_block()
    act = next(n for n in g.nodes() if n.path == "act")
    g.outputs = [g.outputs[0], act.out()]
    (node,) = _fused(FusePointwise().run(g).graph)
    assert node.attrs["program"] == (("mul", 0, 1), ("add", 2, 3))  # silu stays outside


def _chain(ops: list[tuple[str, dict]]) -> Graph:
    g = Graph("chain")
    x = g.add("input", Attrs(kind="features", dim=D), [], (TensorType(("B", "T", D)),), path="in")
    g.inputs = [x.id]
    v = x.out()
    for k, (op, attrs) in enumerate(ops):
        v = _add(g, op, [v], f"n{k}", **attrs).out()
    g.outputs = [v]
    return g


def test_dropout_only_when_p_is_zero() -> None:
    g = _chain(
        [
            ("pointwise", {"fn": "gelu"}),
            ("dropout", {"p": 0.0}),
            ("pointwise", {"fn": "tanh"}),
            ("dropout", {"p": 0.1}),
            ("pointwise", {"fn": "relu"}),
            ("pointwise", {"fn": "sigmoid"}),
        ]
    )
    r = FusePointwise().run(g).graph
    progs = sorted(n.attrs["program"] for n in _fused(r))
    assert progs == [
        (("gelu", 0), ("identity", 1), ("tanh", 2)),
        (("relu", 0), ("sigmoid", 1)),
    ]
    assert sum(n.op == "dropout" for n in r.nodes()) == 1


@pytest.mark.parametrize(("max_ops", "sizes"), [(1, []), (2, [2, 2, 2]), (4, [4, 2]), (16, [6])])
def test_max_ops_is_honoured(max_ops: int, sizes: list[int]) -> None:
    g = _chain([("pointwise", {"fn": f}) for f in ("gelu", "tanh", "relu", "silu", "gelu", "tanh")])
    r = FusePointwise(max_ops=max_ops).run(g)
    verify(r.graph)
    got = sorted((len(n.attrs["program"]) for n in _fused(r.graph)), reverse=True)
    assert got == sizes
    assert r.changed == bool(sizes)


def test_pipeline_option_and_idempotence() -> None:
    (p,) = parse_pipeline("fuse-pointwise{max_ops=3}")
    assert isinstance(p, FusePointwise) and p.max_ops == 3
    g = _chain([("pointwise", {"fn": "gelu"})] * 7)
    once = p.run(g)
    twice = p.run(once.graph)
    assert once.changed and not twice.changed
    assert print_graph(twice.graph) == print_graph(once.graph)


def test_cost_counts_ops_and_saved_inputs() -> None:
    g = _swiglu_block()
    (node,) = _fused(FusePointwise().run(g).graph)
    ins = [TensorType(("B", "T", D))] * 3
    cost = OPS["fused_pointwise"].cost(node.attrs, ins, node.outputs, 16)
    assert cost.ew_flops == (8 + 1 + 1) * D  # silu, mul, add
    # backward reads gate (silu' and mul) and up (mul), never x (the add is linear)
    assert cost.act_bytes == 2 * D * 4
    add_only = Attrs(program=(("add", 0, 1), ("scale", 2, 0.5)), kernel=None)
    assert OPS["fused_pointwise"].cost(add_only, ins[:2], node.outputs, 16).act_bytes == 0


def test_kernel_rule() -> None:
    (node,) = _fused(FusePointwise().run(_swiglu_block()).graph)
    ok, why = can_lower(node, "cpu")
    assert not ok and "CUDA" in why
    pytest.importorskip("triton")
    assert can_lower(node, "cuda") == (True, "ok")


def test_fused_function_is_exact_in_float64() -> None:
    program = (("silu", 0), ("mul", 3, 1), ("add", 2, 4), ("scale", 5, 0.5))
    ns: dict[str, object] = {"torch": torch, "F": F, "__name__": "model"}
    exec(function_source(program, 3), ns)  # generated by archc from a validated program
    a, b, c = (torch.randn(2, 5, 60, dtype=torch.float64) for _ in range(3))
    got = ns[function_name(program, 3)](a, b, c)  # type: ignore[operator]
    assert torch.equal(got, (c + F.silu(a) * b) * 0.5)


def _all_specs() -> list[Path]:
    return sorted(SPECS.glob("*.yaml"))


def test_specs_shrink_and_stay_valid() -> None:
    removed = 0
    for path in _all_specs():
        g = to_graph(path)
        r = FusePointwise().run(g)
        verify(r.graph)
        again = FusePointwise().run(r.graph)
        assert not again.changed, path.name
        before, after = sum(1 for _ in g.walk()), sum(1 for _ in r.graph.walk())
        # Every fused node replaces len(program) nodes by one.
        assert before - after == sum(len(n.attrs["program"]) - 1 for n in _fused(r.graph))
        removed += before - after
    assert removed > 0
    # llama: one silu(gate) * up per MLP, counted on the unfused graph.
    g = to_graph(SPECS / "llama.yaml")
    gates = [
        n
        for n in g.walk()
        if n.op == "pointwise" and n.attrs["fn"] == "silu" and g.users(n.id)[0].op == "binary"
    ]
    fused = _fused(FusePointwise().run(g).graph)
    assert len(fused) == len(gates) > 0
    # looped: the MLP inside the loop's region is fused there.
    looped = FusePointwise().run(to_graph(SPECS / "looped.yaml")).graph
    assert not _fused_top(looped) and _fused(looped)
    assert {n.attrs["program"] for n in fused} == {(("silu", 0), ("mul", 2, 1))}


@pytest.mark.parametrize("spec", ["llama.yaml", "titans-mag.yaml", "looped.yaml"])
def test_model_before_and_after_agree(spec: str) -> None:
    g = to_graph(SPECS / spec)
    f = run_pipeline(g, "fuse-pointwise", verify_each=True).graph
    assert _fused(f)
    before = compile_graph(g).double().eval()
    after = compile_graph(f).double().eval()
    assert list(before.state_dict()) == list(after.state_dict())
    after.load_state_dict(before.state_dict())
    x = torch.randint(0, 16, (2, 7))
    # Gradients too (the CPU path is torch ops: autograd through the same functions).
    before(x).square().sum().backward()
    after(x).square().sum().backward()
    for (k, p), q in zip(before.named_parameters(), after.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), k
    with torch.no_grad():
        ref = before(x)
        assert torch.equal(after(x), ref)
        # The standalone model.py runs the same function.
        ns: dict[str, object] = {"__name__": "model"}
        exec(compile(emit_torch(f), "model.py", "exec"), ns)  # archc's own emitted source
        standalone = ns["Model"]().double().eval()  # type: ignore[operator]
        standalone.load_state_dict(before.state_dict())
        assert torch.equal(standalone(x), ref)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(graph=graphs())
def test_random_graphs_keep_semantics(graph: Graph) -> None:
    """Random graphs (tests/property/graphgen.py): verified, idempotent, every group
    within max_ops, and the model after the pass equals the one before in float64."""
    p = FusePointwise(max_ops=3)
    once = p.run(graph)
    verify(once.graph)
    twice = p.run(once.graph)
    assert not twice.changed and print_graph(twice.graph) == print_graph(once.graph)
    assert all(len(n.attrs["program"]) <= 3 for n in _fused(once.graph))
    before = compile_graph(graph).double().eval()
    after = compile_graph(once.graph).double().eval()
    after.load_state_dict(before.state_dict())
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(after(x), before(x))


GOLDEN = REPO / "tests" / "golden" / "fuse-pointwise"
GOLDEN_CASES = {
    # silu(gate) * up + x: one node at the residual add (hand-checked program).
    "swiglu": _swiglu_block,
    # one silu(gate) * up per MLP; residual adds read by two nodes each stay.
    "llama": lambda: to_graph(SPECS / "llama.yaml"),
    # gelu, p=0 dropout (identity), tanh | dropout p=0.1 stays | relu, sigmoid.
    "dropout": lambda: _chain(
        [
            ("pointwise", {"fn": "gelu"}),
            ("dropout", {"p": 0.0}),
            ("pointwise", {"fn": "tanh"}),
            ("dropout", {"p": 0.1}),
            ("pointwise", {"fn": "relu"}),
            ("pointwise", {"fn": "sigmoid"}),
        ]
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_ir(case: str) -> None:
    """Printed IR before / after the pass against tests/golden/fuse-pointwise/ (checked by
    hand when written; regenerate with ARCHC_UPDATE_GOLDEN=1)."""
    graph = GOLDEN_CASES[case]()
    texts = {
        "before": print_graph(graph),
        "after": print_graph(run_pipeline(graph, "fuse-pointwise", verify_each=True).graph),
    }
    for kind, text in texts.items():
        path = GOLDEN / f"{case}.{kind}.ir"
        if os.environ.get("ARCHC_UPDATE_GOLDEN", "") in {"1", "true", "yes", "on"}:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.read_text() == text, f"{case}: {kind} IR differs from {path.name}"


_RUNNER = """
import sys
sys.modules["archc"] = None  # any 'import archc' in model.py now raises ImportError
import torch
from model import Model
model = Model().double().eval()
model.load_state_dict(torch.load("state.pt"))
with torch.no_grad():
    torch.save(model(torch.load("x.pt")), "y.pt")
"""


def test_emitted_fused_model_runs_on_torch_alone(tmp_path: Path) -> None:
    g = run_pipeline(to_graph(SPECS / "llama.yaml"), "fuse-pointwise").graph
    source = emit_torch(g)
    roots = {
        (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert "archc" not in roots and "from archc" not in source and "import archc" not in source
    (tmp_path / "model.py").write_text(source)
    model = compile_graph(g).double().eval()
    x = torch.randint(0, 16, (2, 7))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", _RUNNER], cwd=tmp_path, env=env, check=True, timeout=120)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), model(x))
