"""Bidirectional cells: `Bidirectional(fwd, bwd)` against two independent runs of the
same cell class, one over each sequence and one over its manually reversed slice, with
and without variable lengths; and `bidirectional: true` in specs.

The reference runs every sequence alone, unpadded, in sequential mode, with the fwd /
bwd weights copied into fresh cells; the reversal is a plain flip of that slice, not
archc's gather. Everything is float64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from oracle_helpers import spec_text
from test_varlen import CELLS, assert_close, lengths_for, make_cell, padded_input
from torch import nn

import archc
from archc.backends.torch.modules.bidirectional import Bidirectional
from archc.cli import run
from archc.ir.cost import _node_cost, model_cost

# One mode per cell beyond sequential: the parallel form where there is one.
MODES = {
    "leaky_tanh": "auto",
    "mingru": "associative",
    "minlstm": "chunked",
    "diag_gru": "newton",
    "s4d_zoh": "chunked",
    "lru": "auto",
    "selective": "associative",
    "gla": "chunked",
    "delta": "chunked",
}


def _fresh(cell: str, like: nn.Module) -> nn.Module:
    """A new sequential-mode cell of the same class holding `like`'s weights."""
    ref = make_cell(cell, "sequential")
    ref.load_state_dict(like.state_dict())
    return ref


@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("cell", list(MODES))
def test_bidirectional_equals_two_runs_on_reversed_slices(cell: str, varlen: bool) -> None:
    t = 23
    bi = Bidirectional(make_cell(cell, MODES[cell]), make_cell(cell, MODES[cell]))
    lengths = lengths_for(t) if varlen else torch.full((3,), t, dtype=torch.int64)
    x = padded_input(t, lengths).requires_grad_()
    with torch.no_grad():
        carry = bi(x[:, :1])[1]
    assert carry.shape[0] == 2
    h0 = (0.5 * torch.randn_like(carry)).requires_grad_()
    y, h = bi(x, h0, lengths=lengths if varlen else None)
    assert y.shape[-1] == 2 * CELLS[cell][0]("sequential").double()(x[:, :1])[0].shape[-1]
    gy, gh = torch.randn_like(y), torch.randn_like(h)
    params = list(bi.parameters())
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), [x, h0, *params])

    ref_f, ref_b = _fresh(cell, bi.fwd), _fresh(cell, bi.bwd)
    loss = x.new_zeros(())
    for b, n in enumerate(lengths.tolist()):
        xs = x[b : b + 1, :n]
        yf, hf = ref_f(xs, h0[0, b : b + 1])
        yb, hb = ref_b(xs.flip(1), h0[1, b : b + 1])
        want = torch.cat([yf, yb.flip(1)], dim=-1)
        assert_close(y[b, :n], want[0], f"outputs of sequence {b}")
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))
        assert_close(h[0, b], hf[0], f"forward carry of sequence {b}")
        assert_close(h[1, b], hb[0], f"backward carry of sequence {b}")
        loss = loss + (want * gy[b : b + 1, :n]).sum()
        loss = loss + (hf * gh[0, b : b + 1]).sum() + (hb * gh[1, b : b + 1]).sum()
    ref_params = [*ref_f.parameters(), *ref_b.parameters()]
    expected = torch.autograd.grad(loss, [x, h0, *ref_params])
    names = ["x", "h0", *(n for n, _ in bi.named_parameters())]
    for name, g, e in zip(names, grads, expected, strict=True):
        assert_close(g, e, f"gradient of {name}")


# -- specs ------------------------------------------------------------------------------------

D = 8
BI_LAYERS: dict[str, dict[str, Any]] = {
    "rnn": {"rnn": {"hidden": 6, "act": "leaky", "bidirectional": True}},
    "mingru": {"mingru": {"hidden": 6, "bidirectional": True}},
    "minlstm": {"minlstm": {"bidirectional": True, "mode": "chunked"}},
    "ssm": {"ssm": {"kind": "selective", "state": 3, "bidirectional": True}},
    "lru": {"ssm": {"kind": "lru", "state": 3, "bidirectional": True}},
    "gla": {"gla": {"heads": 2, "bidirectional": True}},
    "delta": {"delta": {"heads": 2, "bidirectional": True}},
    "gru": {"gru": {"recurrent": "diagonal", "bidirectional": True, "mode": "sequential"}},
    "diag_rnn": {"rnn": {"recurrent": "diagonal", "bidirectional": True, "mode": "newton"}},
    "block_rnn": {"rnn": {"recurrent": "block", "block": 2, "bidirectional": True}},
}


def _one_way(layer: dict[str, Any]) -> dict[str, Any]:
    ((kind, params),) = layer.items()
    return {kind: {**params, "bidirectional": False}}


@pytest.mark.parametrize("name", list(BI_LAYERS))
def test_bidirectional_spec_compiles_with_matching_params(name: str) -> None:
    layer = BI_LAYERS[name]
    model = archc.compile(spec_text([layer, {"linear": 5}], d_model=D), seed=0).double()
    (node,) = [n for n in model.graph.walk() if n.op == "scan"]
    assert node.attrs["bidirectional"]
    # Every IR parameter is the module's parameter of that name and shape, and no more.
    built = {n: tuple(p.shape) for n, p in model.named_parameters() if n.startswith(node.path)}
    spec = {f"{node.path}.{p.name}": p.shape for p in node.params}
    assert built == spec
    assert {n[len(node.path) + 1 :].split(".")[0] for n in built} == {"fwd", "bwd"}
    # Output width doubles; carries gain a leading direction dim of 2; the cost doubles.
    y_type, state_type = node.outputs
    one = archc.to_graph(spec_text([_one_way(layer), {"linear": 5}], d_model=D))
    (node1,) = [n for n in one.walk() if n.op == "scan"]
    y1, s1 = node1.outputs
    assert y_type.feature == 2 * y1.feature
    for (_, t2), (_, t1) in zip(state_type.parts, s1.parts, strict=True):
        assert t2.dims == (2, *t1.dims)
    c2 = _node_cost(model.graph, node.id, 16)
    c1 = _node_cost(one, node1.id, 16)
    assert (c2.flops, c2.act_bytes, c2.state_bytes) == (
        2 * c1.flops,
        2 * c1.act_bytes,
        2 * c1.state_bytes,
    )
    assert model_cost(model.graph, 16).state_bytes_per_sequence == 2 * c1.state_bytes
    # It runs (with and without lengths), cannot stream, and returns (2, B, ...) carries.
    ok, why = model.incremental_support()
    assert not ok and "backwards" in why
    x = torch.randn(3, 9, D, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 1])
    y = model(x, lengths=lengths)
    assert y.shape == (3, 9, 5)
    _, state = model(x, return_state=True)
    assert next(iter(v for k, v in state.items() if k != "_pos")).shape[0] == 2


def test_bidirectional_spec_passes_archc_check(tmp_path: Path) -> None:
    path = tmp_path / "bi.yaml"
    path.write_text(spec_text([*BI_LAYERS.values()], d_model=D).replace("oracle", "bi"))
    messages: list[str] = []
    assert run(["check", str(path)], handler=messages.append) == 0, messages


def test_bidirectional_scan_inside_a_model_equals_the_module() -> None:
    """The compiled layer is Bidirectional(cell, cell): feeding its module directly gives
    the model's output (the model adds nothing around a lone scan)."""
    model = archc.compile(spec_text([BI_LAYERS["mingru"]], d_model=D), seed=0).double()
    mod = model.get_submodule("layers.0.mingru")
    assert isinstance(mod, Bidirectional)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    lengths = torch.tensor([7, 3])
    assert torch.equal(model(x, lengths=lengths), mod(x, lengths=lengths)[0])


def _load(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emitted_model_runs_bidirectional_cells_alone(tmp_path: Path) -> None:
    from archc.backends.torch.emit import emit_torch

    layers = [BI_LAYERS["gla"], {"linear": D}, BI_LAYERS["mingru"]]
    model = archc.compile(spec_text(layers, d_model=D), seed=0).double()
    path = tmp_path / "bi_model.py"
    path.write_text(emit_torch(model.graph))
    standalone = _load(path).Model().double()
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(3, 11, D, dtype=torch.float64)
    lengths = torch.tensor([11, 6, 1])
    with torch.no_grad():
        assert_close(standalone(x, lengths=lengths), model(x, lengths=lengths), "model.py")
    # An LSTM's model.py stays short: no wrapper, no cell helpers.
    lstm = archc.compile(spec_text([{"lstm": {"hidden": 4}}], d_model=D))
    text = emit_torch(lstm.graph)
    assert "class Bidirectional" not in text and "def valid_steps" not in text
    assert "def rnn_forward" in text
