"""The IR: op table, verifier, printer, structural hash."""

from __future__ import annotations

from dataclasses import replace

import pytest

import archc
from archc.ir.graph import Value
from archc.ir.ops import OPS
from archc.ir.printer import print_graph, structural_hash
from archc.ir.types import Attrs, TensorType
from archc.ir.verify import VerifyError, verify

SPEC = """\
model: ir-test
vocab: 50
d_model: 16
layers:
  - embed
  - loop: {steps: 3, tie: cycle(2), body: [{residual: [{norm: rms}, {mlp: {mult: 2}}]}]}
  - lstm: {hidden: 8}
  - linear: {out: 16}
  - head: {tied: true}
"""


def test_every_op_has_complete_rules() -> None:
    for name, op in OPS.items():
        assert op.arity[0] <= op.arity[1], name
        assert callable(op.shape) and callable(op.params) and callable(op.cost), name


def test_built_graph_verifies_and_types_are_symbolic() -> None:
    g = archc.to_graph(SPEC)
    verify(g)
    out = g.type_of(g.outputs[0])
    assert out == TensorType(("B", "T", 50))
    loop = next(n for n in g.nodes() if n.op == "loop")
    assert len(loop.regions) == 2 and loop.attrs["steps"] == 3


def test_verifier_names_the_broken_node() -> None:
    g = archc.to_graph(SPEC).copy()
    lin = next(n for n in g.nodes() if n.op == "linear" and n.attrs["weight_from"] is None)
    g.replace(replace(lin, attrs=lin.attrs.replace(out=7)))
    with pytest.raises(VerifyError, match="recorded types"):
        verify(g, after="example-pass")
    with pytest.raises(VerifyError, match="after pass 'example-pass'"):
        verify(g, after="example-pass")


def test_verifier_rejects_dangling_inputs_and_bad_attrs() -> None:
    g = archc.to_graph(SPEC).copy()
    norm = next(n for n in g.nodes() if n.op == "linear")
    g2 = archc.to_graph(SPEC).copy()
    head = [n for n in g2.nodes()][-1]
    g2.replace(replace(head, attrs=Attrs({**dict(head.attrs), "weight_from": "nowhere"})))
    with pytest.raises(VerifyError, match="names no embed"):
        verify(g2)
    with pytest.raises(ValueError, match="not in the graph"):
        g.replace(replace(norm, inputs=(Value(999),)))
    # A reference to a real node's missing output index is caught by the verifier.
    g.replace(replace(norm, inputs=(Value(norm.inputs[0].node, 5),)))
    with pytest.raises(VerifyError, match="out of range"):
        verify(g)


def test_printer_is_deterministic_and_hash_ignores_names() -> None:
    a, b = archc.to_graph(SPEC), archc.to_graph(SPEC)
    assert print_graph(a) == print_graph(b)
    renamed = archc.to_graph(SPEC.replace("model: ir-test", "model: other"))
    assert structural_hash(renamed) == structural_hash(a)
    wider = archc.to_graph(SPEC.replace("mult: 2", "mult: 3"))
    assert structural_hash(wider) != structural_hash(a)
    assert "region 0 {" in print_graph(a) and "@layers.1.loop.1.0.residual" in print_graph(a)


def test_cost_model_counts_loop_copies_and_state() -> None:
    from archc.ir.cost import model_cost

    g = archc.to_graph(SPEC)
    cost = model_cost(g, seq_len=32)
    model = archc.compile(SPEC)
    assert cost.parameters == model.num_parameters()
    assert cost.state_bytes_per_sequence == 2 * 8 * 4  # LSTM h and c, fp32
    assert cost.kv_cache_bytes_per_token == 0
    # 3 loop steps of one MLP each, plus the LSTM mixer.
    assert cost.layers == 4
