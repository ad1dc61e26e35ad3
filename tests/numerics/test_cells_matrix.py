"""The matrix-state layers `gla` and `delta` (backends/torch/modules/cells.py GLA,
DeltaNet) against float64 step-by-step recurrences written here from the papers'
equations, independent of archc's code: outputs, final states and every parameter
gradient, in both modes; chunked against sequential; streaming against full; costs and
spec errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from oracle_helpers import check_layer_against_reference, run_in_chunks, spec_text

import archc
from archc.backends.torch.emit import emit_torch
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError
from archc.ir.cost import model_cost

D, HEADS, VOCAB = 16, 2, 7
REL = 1e-9  # float64 against float64: rounding only
Ref = Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def _split(x: torch.Tensor) -> torch.Tensor:
    """(B, H*d) -> (B, H, d)."""
    return x.reshape(x.shape[0], HEADS, -1)


def _gla(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    dk, dv = p["weight_q"].shape[0] // HEADS, D // HEADS
    S = x.new_zeros(x.shape[0], HEADS, dk, dv)
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        q = _split(xt @ p["weight_q"].T) / dk**0.5
        k, v = _split(xt @ p["weight_k"].T), _split(xt @ p["weight_v"].T)
        pre = xt @ p["weight_g"].T + p["bias_g"]
        g = (1.0 / (1.0 + torch.exp(-pre))) ** (1.0 / 16.0)  # sigmoid^(1/tau), tau = 16
        # S_t = diag(g) S + k^T v, built row by row.
        S = torch.stack(
            [_split(g)[:, :, i, None] * S[:, :, i] + k[:, :, i, None] * v for i in range(dk)],
            dim=2,
        )
        o = (q[..., None] * S).sum(2)  # q S
        ys.append(o.reshape(x.shape[0], D) @ p["weight_o"].T)
    return torch.stack(ys, 1), S


def _delta(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    d = D // HEADS
    S = x.new_zeros(x.shape[0], HEADS, d, d)
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        q, k = _split(xt @ p["weight_q"].T), _split(xt @ p["weight_k"].T)
        q = q / q.pow(2).sum(-1, keepdim=True).sqrt()
        k = k / k.pow(2).sum(-1, keepdim=True).sqrt()
        v = _split(xt @ p["weight_v"].T)
        beta = 1.0 / (1.0 + torch.exp(-(xt @ p["weight_beta"].T + p["bias_beta"])))
        # DeltaNet in its (dv, dk) form: M_t = M (I - beta k k^T) + beta v k^T; S = M^T.
        M = S.transpose(-1, -2)
        eye = torch.eye(d, dtype=x.dtype)
        kk = k[..., :, None] * k[..., None, :]
        M = M @ (eye - beta[..., None, None] * kk) + beta[..., None, None] * (
            v[..., :, None] * k[..., None, :]
        )
        S = M.transpose(-1, -2).contiguous()
        o = (M @ q[..., None])[..., 0]  # M q = q S
        ys.append(o.reshape(x.shape[0], D) @ p["weight_o"].T)
    return torch.stack(ys, 1), S


CELLS: dict[str, tuple[dict[str, Any], Ref]] = {
    "gla": ({"gla": {"heads": HEADS}}, _gla),
    "gla_dk": ({"gla": {"heads": HEADS, "key_dim": 5}}, _gla),
    "delta": ({"delta": {"heads": HEADS}}, _delta),
}


def _model(cell: str, mode: str = "sequential", chunk: int = 16) -> Any:
    ((kind, params),) = CELLS[cell][0].items()
    layer = {kind: {**params, "mode": mode, "chunk": chunk}}
    layers = ["embed", layer, {"head": {"out": 5}}]
    model = archc.compile(spec_text(layers, d_model=D, vocab=VOCAB), seed=0).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _path(cell: str) -> str:
    return f"layers.1.{next(iter(CELLS[cell][0]))}"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return rel_rms(a, b, floor=1e-6)


@pytest.mark.parametrize("t", [1, 63, 257])
@pytest.mark.parametrize("mode", ["sequential", "chunked"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_layer_equals_float64_reference(cell: str, mode: str, t: int) -> None:
    check_layer_against_reference(_model(cell, mode), _path(cell), CELLS[cell][1], VOCAB, t, REL)


@pytest.mark.parametrize("cell", list(CELLS))
def test_chunked_and_auto_equal_sequential(cell: str) -> None:
    ids = torch.randint(0, VOCAB, (2, 100))
    seq = _model(cell)
    y_seq = seq(ids)
    y_seq.square().sum().backward()
    for mode, chunk in (("chunked", 16), ("chunked", 64), ("auto", 32)):
        other = _model(cell, mode, chunk)
        y = other(ids)
        assert _rel(y.detach(), y_seq.detach()) < REL, (mode, chunk)
        y.square().sum().backward()
        for (name, p), q in zip(other.named_parameters(), seq.parameters(), strict=True):
            assert _rel(p.grad, q.grad) < 1e-8, (mode, name)


@pytest.mark.parametrize("mode", ["sequential", "chunked"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_streaming_equals_full(cell: str, mode: str) -> None:
    model = _model(cell, mode).eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    ids = torch.randint(0, VOCAB, (2, 60))
    with torch.no_grad():
        full, final = model(ids, return_state=True)
        streamed, state = run_in_chunks(model, ids, (1, 3, 17, 1, 38))
    assert (streamed - full).abs().max() < 1e-10
    path = _path(cell)
    assert (state[path] - final[path]).abs().max() < 1e-10


def test_decay_params_and_costs() -> None:
    layers = ["embed", {"gla": {"heads": 4, "key_dim": 8}}, {"delta": {"heads": 2}}]
    graph = archc.to_graph(spec_text(layers, d_model=D, vocab=VOCAB))
    flags = {f"{n.path}.{p.name}": p.decay for n in graph.walk() for p in n.params}
    assert not flags["layers.1.gla.bias_g"] and not flags["layers.2.delta.bias_beta"]
    assert flags["layers.1.gla.weight_q"] and flags["layers.2.delta.weight_o"]
    cost = model_cost(graph, 64)
    assert cost.state_bytes_per_sequence == 4 * (4 * 8 * (D // 4) + 2 * (D // 2) ** 2)
    assert cost.forward_flops_per_token > 2 * D * D * 8


def test_emitted_model_carries_the_sequential_fallback() -> None:
    src = emit_torch(archc.to_graph(spec_text(["embed", {"delta": 2}], d_model=D, vocab=VOCAB)))
    assert "def matrix_scan(" in src and "class DeltaNet(" in src and "class GLA(" not in src
    lstm = emit_torch(archc.to_graph(spec_text(["embed", {"lstm": 8}], d_model=D, vocab=VOCAB)))
    assert "matrix_scan" not in lstm


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"gla": {"mode": "associative"}}, "matrix state"),
        ({"delta": {"mode": "newton"}}, "reserved"),
        ({"gla": {"heads": 3}}, "must divide"),
        ({"delta": {"chunk": 0}}, "chunk"),
    ],
)
def test_bad_settings_are_spec_errors(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError, match=message):
        archc.compile(spec_text(["embed", layer], d_model=D, vocab=VOCAB))
