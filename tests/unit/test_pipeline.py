"""The pass framework: pipeline strings (typed options, located errors, round trip),
the runner (-O0, after_each, verify after every pass naming the pass that broke the
graph), and the `shapes` and `verify` passes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import pytest

import archc
from archc import knobs
from archc.diagnostics import DiagnosticError
from archc.ir.graph import Graph, Value
from archc.ir.printer import print_graph
from archc.ir.types import TensorType
from archc.ir.verify import VerifyError, verify
from archc.passes.base import PassResult
from archc.passes.pipeline import (
    O0,
    O2,
    format_pipeline,
    parse_pipeline,
    pipeline_for_level,
    register_pass,
    run_pipeline,
)
from archc.passes.select_scan_mode import SelectScanMode
from archc.passes.shapes import Shapes
from archc.passes.verify_pass import Verify
from tests.conftest import SPECS

TINY = """
model: tiny
vocab: 16
d_model: 8
layers:
  - embed
  - residual: [{norm: layer}, {mlp: {mult: 2, act: gelu}}]
  - head
"""


# -- test-local passes ---------------------------------------------------------------------
@register_pass
@dataclass(frozen=True)
class _Options:
    """Does nothing; has one option of every type a pipeline string can carry."""

    name: ClassVar[str] = "test-options"
    count: int = 1
    scale: float = 1.0
    flag: bool = False
    label: str = "x"
    limit: int | None = None

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, False)


def _first(graph: Graph, op: str):
    return next(n for n in graph.nodes() if n.op == op)


@register_pass
@dataclass(frozen=True)
class _CorruptType:
    """A broken pass: records a wrong output type on the first pointwise node."""

    name: ClassVar[str] = "test-corrupt-type"

    def run(self, graph: Graph) -> PassResult:
        out = graph.copy()
        node = _first(graph, "pointwise")
        out.replace(replace(node, outputs=(TensorType(("B", "T", 3)),)))
        return PassResult(out, True)


@register_pass
@dataclass(frozen=True)
class _CorruptInput:
    """A broken pass: rewires the residual add to an output its source does not have."""

    name: ClassVar[str] = "test-corrupt-input"

    def run(self, graph: Graph) -> PassResult:
        out = graph.copy()
        node = _first(graph, "binary")
        out.replace(replace(node, inputs=(node.inputs[0], Value(node.inputs[1].node, 5))))
        return PassResult(out, True)


# -- parsing -------------------------------------------------------------------------------
def test_options_are_typed() -> None:
    (p,) = parse_pipeline("test-options{count=3, scale=0.5,flag=true,label=abc,limit=none}")
    assert p == _Options(count=3, scale=0.5, flag=True, label="abc", limit=None)
    assert isinstance(p.count, int) and isinstance(p.scale, float) and p.flag is True
    (p,) = parse_pipeline("test-options{limit=7,flag=off}")
    assert p.limit == 7 and p.flag is False


def test_context_fills_options_the_string_leaves_out() -> None:
    ctx = {"device": "cuda", "seq_len": 128, "unrelated": 1}
    a, b = parse_pipeline("select-scan-mode,select-scan-mode{seq_len=8}", ctx)
    assert a == SelectScanMode(seq_len=128, device="cuda")
    assert b == SelectScanMode(seq_len=8, device="cuda")


def _located(text: str) -> tuple[int, str]:
    with pytest.raises(DiagnosticError) as info:
        parse_pipeline(text)
    (d,) = info.value.diagnostics
    assert d.loc is not None and d.loc.file == "<passes>" and d.loc.line == 1
    return d.loc.col, d.message


@pytest.mark.parametrize(
    ("text", "col", "words"),
    [
        ("cse,nope", 5, "unknown pass 'nope'"),
        ("nope", 1, "unknown pass 'nope'"),
        ("test-options{count=1, bogus=2}", 23, "has no option 'bogus'"),
        ("dce,test-options{count=abc}", 24, "expected an integer, got 'abc'"),
        ("test-options{flag=maybe}", 19, "expected true or false"),
        ("test-options{scale=fast}", 20, "expected a number"),
        ("test-options{count}", 14, "needs a value"),
        ("cse dce", 5, "expected ','"),
        ("cse,,dce", 5, "expected a pass name"),
    ],
)
def test_bad_pipelines_are_located_errors(text: str, col: int, words: str) -> None:
    got_col, message = _located(text)
    assert (got_col, words in message) == (col, True), message


def test_unknown_pass_renders_with_caret_and_suggestion() -> None:
    with pytest.raises(DiagnosticError) as info:
        parse_pipeline("canonicalize,csee")
    text = info.value.render()
    assert text.startswith("<passes>:1:14: error: unknown pass 'csee'")
    assert "  canonicalize,csee\n" + " " * 15 + "^" in text
    assert "did you mean 'cse'?" in text


@pytest.mark.parametrize(
    "text",
    [
        "test-options",
        "test-options{count=2,flag=true,label=y,limit=4},shapes,verify",
        "select-scan-mode{seq_len=64,device=cuda},assign-kernels{device=cuda}",
    ],
)
def test_format_pipeline_round_trips(text: str) -> None:
    passes = parse_pipeline(text)
    again = format_pipeline(passes)
    assert parse_pipeline(again) == passes
    assert format_pipeline(parse_pipeline(again)) == again


def test_format_pipeline_leaves_out_defaults() -> None:
    assert format_pipeline([_Options(), SelectScanMode()]) == "test-options,select-scan-mode"
    assert format_pipeline([_Options(count=5)]) == "test-options{count=5}"


def test_levels() -> None:
    assert pipeline_for_level(0) == O0 == ""
    assert pipeline_for_level(2) == O2
    assert parse_pipeline(O0) == []
    names = [p.name for p in parse_pipeline(O2)]
    assert names[-2:] == ["select-scan-mode", "assign-kernels"]


# -- running -------------------------------------------------------------------------------
def test_O0_runs_nothing() -> None:
    graph = archc.to_graph(TINY)
    seen: list[str] = []
    result = run_pipeline(graph, O0, after_each=lambda p, r: seen.append(p.name))
    assert result.graph is graph and result.log == [] and seen == []


def test_after_each_sees_every_pass_in_order() -> None:
    graph = archc.to_graph(TINY)
    seen: list[tuple[str, bool]] = []
    result = run_pipeline(
        graph,
        "shapes,verify,test-options",
        after_each=lambda p, r: seen.append((p.name, r.changed)),
    )
    assert seen == result.log == [("shapes", False), ("verify", False), ("test-options", False)]


def test_tests_verify_after_every_pass() -> None:
    assert knobs.verify_each_pass()  # tests/conftest.py sets ARCHC_VERIFY=1


@pytest.mark.parametrize("bad", ["test-corrupt-type", "test-corrupt-input"])
def test_broken_pass_is_named(bad: str) -> None:
    graph = archc.to_graph(TINY)
    with pytest.raises(VerifyError) as info:
        run_pipeline(graph, f"shapes,{bad},verify")  # verify_each from ARCHC_VERIFY
    assert f"after pass '{bad}'" in str(info.value)
    # The same through archc.compile's `passes`.
    with pytest.raises(VerifyError, match=f"after pass '{bad}'"):
        archc.compile(TINY, passes=bad)


def test_without_verify_each_a_broken_pass_goes_unnoticed_by_the_runner() -> None:
    graph = archc.to_graph(TINY)
    result = run_pipeline(graph, "test-corrupt-type", verify_each=False)
    with pytest.raises(VerifyError):
        verify(result.graph)


# -- shapes and verify ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt.yaml", "hnet-2stage.yaml", "looped.yaml", "titans-mac.yaml"])
def test_shapes_keeps_a_well_typed_graph(name: str) -> None:
    graph = archc.to_graph(SPECS / name)
    result = Shapes().run(graph)
    assert result.changed is False
    assert print_graph(result.graph) == print_graph(graph)


def test_shapes_corrects_a_stale_type() -> None:
    graph = archc.to_graph(TINY)
    want = print_graph(graph)
    stale = _CorruptType().run(graph).graph
    with pytest.raises(VerifyError):
        verify(stale)
    fixed = Shapes().run(stale)
    assert fixed.changed is True
    verify(fixed.graph)
    assert print_graph(fixed.graph) == want
    assert "f32[B,T,3]" in print_graph(stale)  # the input graph was not mutated


def test_shapes_corrects_a_stale_type_inside_a_region() -> None:
    graph = archc.to_graph(SPECS / "looped.yaml")
    want = print_graph(graph)
    loop = next(n for n in graph.nodes() if n.regions)
    region = loop.regions[0].copy()
    inner = next(n for n in region.nodes() if n.op == "linear")
    t = inner.outputs[0]
    region.replace(replace(inner, outputs=(TensorType((*t.dims[:-1], 1)),)))
    stale = graph.copy()
    stale.replace(replace(loop, regions=(region, *loop.regions[1:])))
    with pytest.raises(VerifyError):
        verify(stale)
    fixed = Shapes().run(stale)
    assert fixed.changed and print_graph(fixed.graph) == want


def test_verify_pass_never_changes_and_raises_on_a_broken_graph() -> None:
    graph = archc.to_graph(TINY)
    result = Verify().run(graph)
    assert result.changed is False and result.graph is graph
    with pytest.raises(VerifyError):
        Verify().run(_CorruptInput().run(graph).graph)
