"""Golden before/after IR of every rewrite pass.

Each case is a graph (a spec of specs/, a spec stored next to its golden files, or a
hand-built graph below), a pipeline string, and two files:
`tests/golden/passes/<pass>/<case>.before.ir` (the printed graph) and `.after.ir` (the
printed graph after the pipeline). A change to a pass that alters any of them fails
here; after checking that it is intended, regenerate with

    ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden/test_pass_golden.py

The .after.ir files were checked by hand when written: each says in the case's
docstring (or the spec's comment) what must have happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import archc
from archc.ir.graph import Graph, Value
from archc.ir.printer import print_graph
from archc.passes.pipeline import run_pipeline

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = HERE / "passes"
sys.path.insert(0, str(REPO / "tests" / "property"))
from graphgen import Maker  # noqa: E402

UPDATE = os.environ.get("ARCHC_UPDATE_GOLDEN", "").strip().lower() in {"1", "true", "yes", "on"}


def spec(name: str) -> Callable[[], Graph]:
    return lambda: archc.to_graph(REPO / "specs" / name)


def local(pass_dir: str, name: str) -> Callable[[], Graph]:
    return lambda: archc.to_graph(GOLDEN / pass_dir / name)


def algebra() -> Graph:
    """x*1, 0+x, x-0 and scale{1} vanish; 3*x becomes scale{3}(x), and the chain
    scale{0.5}(scale{2}(scale{3}(x))) folds into one scale{3.0} at the outermost
    node (its path and loc kept); the dead consts are erased."""
    m = Maker("algebra")
    one = m.add("const", {"value": 1.0}, m.x)
    zero = m.add("const", {"value": 0.0}, m.x)
    three = m.add("const", {"value": 3.0}, m.x)
    a = m.add("binary", {"fn": "mul"}, m.x, one)
    b = m.add("binary", {"fn": "add"}, zero, a)
    c = m.add("binary", {"fn": "mul"}, three, b)
    d = m.add("scale", {"factor": 0.5}, m.add("scale", {"factor": 2.0}, c))
    e = m.add("scale", {"factor": 1.0}, m.add("pointwise", {"fn": "tanh"}, d))
    return m.finish(m.add("binary", {"fn": "sub"}, e, zero))


def shuffle() -> Graph:
    """reshape(reshape) -> one reshape; rearrange (1,0) twice -> gone (an inverse pair);
    rearranges (1,2,0) then (1,2,0) -> one (2,0,1); a reshape to its input's shape goes."""
    m = Maker("shuffle")
    x = m.add("reshape", {"shape": (4, 2)}, m.add("reshape", {"shape": (2, 2, 2)}, m.x))
    x = m.add("rearrange", {"perm": (1, 0)}, m.add("rearrange", {"perm": (1, 0)}, x))
    x = m.add("reshape", {"shape": (8,)}, x)
    y = m.add("reshape", {"shape": (2, 2, 2)}, m.add("reshape", {"shape": (8,)}, x))
    y = m.add("rearrange", {"perm": (1, 2, 0)}, m.add("rearrange", {"perm": (1, 2, 0)}, y))
    return m.finish(m.add("reshape", {"shape": (8,)}, y))


def loop_region() -> Graph:
    """Identity and dropout{p=0} inside a loop body fold; the region input stays."""
    m = Maker("looped")
    body = Maker("body", prefix="body.")
    h = body.add("pointwise", {"fn": "identity"}, body.x)
    h = body.add("linear", {"out": 8}, body.add("dropout", {"p": 0.0}, h))
    region = body.finish(body.add("pointwise", {"fn": "identity"}, h))
    return m.finish(m.add("loop", {"steps": 2}, m.x, regions=(region,)))


def consts() -> Graph:
    """gelu(const 1) -> const 0.8413447460685429 (= Phi(1)); const 2 + const 3 -> 5;
    rms norm of const 2 -> 2/sqrt(4 + 1e-5); layer norm of a const -> 0; scale{-0.5}
    of const 2 -> -1; then the exposed identities: x * (const 5) -> scale{5}(x) and
    + (const 0) -> gone."""
    m = Maker("consts")
    g = m.add("pointwise", {"fn": "gelu"}, m.add("const", {"value": 1.0}, m.x))
    s = m.add("binary", {"fn": "add"}, m.add("const", {"value": 2.0}, m.x), g)
    five = m.add(
        "binary",
        {"fn": "add"},
        m.add("const", {"value": 2.0}, m.x),
        m.add("const", {"value": 3.0}, m.x),
    )
    r = m.add("norm", {"kind": "rms", "affine": False}, m.add("const", {"value": 2.0}, m.x))
    z = m.add("norm", {"kind": "layer", "affine": False}, m.add("const", {"value": 7.0}, m.x))
    k = m.add("scale", {"factor": -0.5}, m.add("const", {"value": 2.0}, m.x))
    out = m.add("binary", {"fn": "mul"}, m.x, five)
    for v in (s, r, z, k):
        out = m.add("binary", {"fn": "add"}, out, v)
    return m.finish(out)


def duplicates() -> Graph:
    """silu(norm(x)) built twice (norm without affine weights) merges into one; the two
    affine norms (parameters) and the two dropouts p=0.25 (two masks) stay apart."""
    m = Maker("dups")
    plain = {"kind": "rms", "affine": False}
    a = m.add("pointwise", {"fn": "silu"}, m.add("norm", plain, m.x))
    b = m.add("pointwise", {"fn": "silu"}, m.add("norm", plain, m.x))
    c = m.add("norm", {"kind": "rms"}, m.x)
    d = m.add("norm", {"kind": "rms"}, m.x)
    e = m.add("dropout", {"p": 0.25}, m.x)
    f = m.add("dropout", {"p": 0.25}, m.x)
    out = m.add("binary", {"fn": "mul"}, a, b)
    for v in (c, d, e, f):
        out = m.add("binary", {"fn": "add"}, out, v)
    return m.finish(out)


def region_dups() -> Graph:
    """Duplicates inside a loop body merge there; the copy outside the loop stays (a
    region is its own scope)."""
    m = Maker("looped")
    body = Maker("body", prefix="body.")
    a = body.add("pointwise", {"fn": "gelu"}, body.x)
    b = body.add("pointwise", {"fn": "gelu"}, body.x)
    region = body.finish(body.add("binary", {"fn": "add"}, a, b))
    x = m.add("pointwise", {"fn": "gelu"}, m.x)
    return m.finish(m.add("loop", {"steps": 2}, x, regions=(region,)))


def dead() -> Graph:
    """A dead linear branch (with parameters) and a dead node in a loop body are removed;
    the graph input and the region input stay."""
    m = Maker("dead")
    m.add("pointwise", {"fn": "relu"}, m.add("linear", {"out": 8}, m.x))
    body = Maker("body", prefix="body.")
    body.add("linear", {"out": 4}, body.x)
    region = body.finish(body.add("pointwise", {"fn": "tanh"}, body.x))
    return m.finish(m.add("loop", {"steps": 1}, m.x, regions=(region,)))


def _tokens_graph(name: str) -> tuple[Graph, int]:
    from archc.ir.types import TensorType

    g = Graph(name)
    tok = g.add(
        "input", {"kind": "tokens", "dim": None}, (), (TensorType(("B", "T"), "i64"),), path="in"
    )
    g.inputs = [tok.id]
    return g, tok.id


def tied_unused() -> Graph:
    """The embedding a head ties to stays although its own output is unused (its weight
    is the head's); the other unused embedding and its dead linear go."""
    from archc.ir.types import ParamSpec, TensorType

    g, tok = _tokens_graph("tied")
    t8 = TensorType(("B", "T", 8))
    w = ParamSpec("weight", (16, 8), "normal(0.02)", decay=False)
    src = g.add("embed", {"vocab": 16, "dim": 8}, (Value(tok),), (t8,), (w,), path="src")
    used = g.add("embed", {"vocab": 16, "dim": 8}, (Value(tok),), (t8,), (w,), path="used")
    dead = g.add("embed", {"vocab": 16, "dim": 8}, (Value(tok),), (t8,), (w,), path="dead")
    g.add(
        "linear",
        {"out": 8, "bias": False, "weight_from": None},
        (dead.out(),),
        (t8,),
        (ParamSpec("weight", (8, 8), "uniform(0.35)"),),
        path="dead_linear",
    )
    head = g.add(
        "linear",
        {"out": 16, "bias": False, "weight_from": src.path},
        (used.out(),),
        (TensorType(("B", "T", 16)),),
        path="head",
    )
    g.outputs = [head.out()]
    return g


def tied_own_weight() -> Graph:
    """A hand-built tied head that also carries its own weight ParamSpec: tie-weights
    drops the duplicate, so the embedding's matrix is counted once."""
    import dataclasses

    from archc.ir.types import ParamSpec, TensorType

    g = Graph("tied")
    tok = g.add("input", {"kind": "tokens", "dim": None}, (), (TensorType(("B", "T"), "i64"),))
    g.inputs = [tok.id]
    emb = g.add(
        "embed",
        {"vocab": 16, "dim": 8},
        (tok.out(),),
        (TensorType(("B", "T", 8)),),
        (ParamSpec("weight", (16, 8), "normal(0.02)", decay=False),),
        path="embed",
    )
    head = g.add(
        "linear",
        {"out": 16, "bias": False, "weight_from": "embed"},
        (emb.out(),),
        (TensorType(("B", "T", 16)),),
        path="head",
    )
    dup = ParamSpec("weight", (16, 8), "uniform(0.35)")
    g.replace(dataclasses.replace(head, params=(dup,)))
    g.outputs = [head.out()]
    return g


def stale_types() -> Graph:
    """A tanh whose recorded output type is stale (width 5 instead of its input's 8):
    shapes recomputes it from the op table, regions' inputs included."""
    import dataclasses

    from archc.ir.types import TensorType

    m = Maker("stale")
    y = m.add("pointwise", {"fn": "tanh"}, m.x)
    g = m.finish(m.add("linear", {"out": 8}, y))
    node = g.node(y.node)
    g.replace(dataclasses.replace(node, outputs=(TensorType(("B", "T", 5)),)))
    return g


CASES: list[tuple[str, str, str, Callable[[], Graph]]] = [
    ("shapes", "stale", "shapes", stale_types),
    ("shapes", "hrm", "shapes", spec("hrm.yaml")),
    ("verify", "gpt", "verify", spec("gpt.yaml")),
    (
        "select-scan-mode",
        "aaren-cuda",
        "select-scan-mode{seq_len=256,device=cuda}",
        spec("aaren.yaml"),
    ),
    (
        "select-scan-mode",
        "aaren-cpu",
        "select-scan-mode{seq_len=256,device=cpu}",
        spec("aaren.yaml"),
    ),
    ("select-scan-mode", "short", "select-scan-mode{seq_len=8}", spec("search-hybrid.yaml")),
    ("assign-kernels", "lstm-cuda", "assign-kernels{device=cuda}", spec("lstm.yaml")),
    ("assign-kernels", "llama-cpu", "fuse-pointwise,assign-kernels", spec("llama.yaml")),
    (
        "assign-kernels",
        "llama-cuda",
        "fuse-pointwise,assign-kernels{device=cuda}",
        spec("llama.yaml"),
    ),
    ("canonicalize", "builder", "canonicalize", local("canonicalize", "builder.yaml")),
    (
        "canonicalize",
        "builder-eval",
        "canonicalize{training=false}",
        local("canonicalize", "builder-eval.yaml"),
    ),
    ("canonicalize", "algebra", "canonicalize", algebra),
    ("canonicalize", "shuffle", "canonicalize", shuffle),
    ("canonicalize", "loop-region", "canonicalize", loop_region),
    ("canonicalize", "gpt", "canonicalize", spec("gpt.yaml")),
    ("const-fold", "consts", "const-fold", consts),
    ("const-fold", "llama", "const-fold", spec("llama.yaml")),
    ("cse", "duplicates", "cse", duplicates),
    ("cse", "region", "cse", region_dups),
    ("cse", "looped", "cse", spec("looped.yaml")),
    ("dce", "dead", "dce", dead),
    ("dce", "tied-unused", "dce", tied_unused),
    ("dce", "gpt", "dce", spec("gpt.yaml")),
    ("tie-weights", "gpt", "tie-weights", spec("gpt.yaml")),
    ("tie-weights", "own-weight", "tie-weights", tied_own_weight),
    (
        "pipeline",
        "builder",
        "canonicalize,const-fold,cse,tie-weights,dce",
        local("canonicalize", "builder.yaml"),
    ),
    ("pipeline", "consts", "canonicalize,const-fold,cse,tie-weights,dce", consts),
]


@pytest.mark.parametrize(
    ("pass_dir", "case", "pipeline", "make"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES]
)
def test_pass_golden(pass_dir: str, case: str, pipeline: str, make: Callable[[], Graph]) -> None:
    graph = make()
    before = print_graph(graph)
    # verify_each would reject the own-weight case's input, which the pass repairs.
    after = print_graph(run_pipeline(graph, pipeline, verify_each=False).graph)
    files = {"before": before, "after": after}
    for kind, text in files.items():
        path = GOLDEN / pass_dir / f"{case}.{kind}.ir"
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            continue
        assert path.exists(), f"no golden file {path.relative_to(REPO)}; create it with " + (
            "ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden/test_pass_golden.py"
        )
        assert text == path.read_text(), (
            f"{kind} IR of {pass_dir}/{case} differs from {path.name}; if intended, regenerate "
            "with ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden/test_pass_golden.py"
        )


def test_no_stale_pass_golden_files() -> None:
    if UPDATE:
        pytest.skip("regenerating golden files")
    expected = {f"{p}/{c}.{k}.ir" for p, c, _, _ in CASES for k in ("before", "after")}
    found = {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*.ir")}
    assert found == expected, f"stale: {sorted(found - expected)}; missing: {expected - found}"
