"""The 1-D pLSTM layer (`plstm`, backends/torch/modules/cells_plstm.py and
backends/torch/scans/plstm.py) against a float64 step-by-step recurrence written here
from the paper's 1-D equations, C_t = T_t C_{t-1} + S_t k_t^T v_t, y_t = M_t q_t C_t:
outputs, final states and every parameter gradient in every mode; causality; signed
transitions (the sign must survive the chunked form); streaming; spec errors.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from oracle_helpers import check_layer_against_reference, run_in_chunks, spec_text

import archc
from archc.backends.torch.emit import emit_torch
from archc.backends.torch.scans.plstm import plstm_scan
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError

D, HEADS, VOCAB = 16, 2, 7
REL = 1e-9  # float64 against float64: rounding only
PATH = "layers.1.plstm"


def _sig(z: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


def _reference(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, D) -> (y (B, T, D), C_T (B, H, dk, dv)), one token and one head at a time."""
    bsz, T, _ = x.shape
    dk, dv = p["weight_q"].shape[0] // HEADS, D // HEADS
    C = [x.new_zeros(bsz, dk, dv) for _ in range(HEADS)]
    ys = []
    for t in range(T):
        xt = x[:, t]
        outs = []
        for h in range(HEADS):
            q = xt @ p["weight_q"][h * dk : (h + 1) * dk].T / dk**0.5
            k = xt @ p["weight_k"][h * dk : (h + 1) * dk].T
            v = xt @ p["weight_v"][h * dv : (h + 1) * dv].T
            src = _sig(xt @ p["weight_s"][h] + p["bias_s"][h])
            tr = torch.tanh(xt @ p["weight_t"][h] + p["bias_t"][h])
            mark = _sig(xt @ p["weight_m"][h] + p["bias_m"][h])
            C[h] = tr[:, None, None] * C[h] + src[:, None, None] * k[:, :, None] * v[:, None, :]
            outs.append(mark[:, None] * torch.einsum("bk,bkv->bv", q, C[h]))
        ys.append(torch.cat(outs, -1) @ p["weight_o"].T)
    return torch.stack(ys, 1), torch.stack(C, 1)


def _model(mode: str = "sequential", chunk: int = 16, key_dim: int | None = None) -> Any:
    params: dict[str, Any] = {"heads": HEADS, "mode": mode, "chunk": chunk}
    if key_dim:
        params["key_dim"] = key_dim
    layers = ["embed", {"plstm": params}, {"head": {"out": 5}}]
    model = archc.compile(spec_text(layers, d_model=D, vocab=VOCAB), seed=0).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return rel_rms(a, b, floor=1e-6)


@pytest.mark.parametrize("key_dim", [None, 5])
@pytest.mark.parametrize("t", [1, 63, 130])
@pytest.mark.parametrize("mode", ["sequential", "chunked", "auto"])
def test_layer_equals_float64_reference(mode: str, t: int, key_dim: int | None) -> None:
    check_layer_against_reference(_model(mode, key_dim=key_dim), PATH, _reference, VOCAB, t, REL)


def test_signed_transitions_and_extremes_in_chunked_scan() -> None:
    """Negative, near-zero and near-one transitions: the chunked form keeps the sign
    parity and never overflows; checked against a plain loop written here."""
    g = torch.Generator().manual_seed(3)
    B, H, T, dk, dv = 2, 3, 77, 4, 5
    q, k = (torch.randn(B, H, T, dk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, T, dv, generator=g, dtype=torch.float64)
    tr = torch.empty(B, H, T, dtype=torch.float64)
    tr[0, 0] = -0.999  # alternating sign, long memory
    tr[0, 1] = 1e-8 * torch.randn(T, generator=g, dtype=torch.float64)  # near-zero
    tr[0, 2] = torch.tanh(3 * torch.randn(T, generator=g, dtype=torch.float64))
    tr[1] = torch.rand(H, T, generator=g, dtype=torch.float64) * 2 - 1
    S0 = torch.randn(B, H, dk, dv, generator=g, dtype=torch.float64)
    C, outs = S0.clone(), []
    for t in range(T):
        C = tr[:, :, t, None, None] * C + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, :, None] * C).sum(-2))
    o_ref = torch.stack(outs, 2)
    for chunk in (1, 8, 16, 64):
        o, CT = plstm_scan(q, k, v, tr, S0, mode="chunked", chunk=chunk)
        assert torch.isfinite(o).all()
        assert _rel(o, o_ref) < REL and _rel(CT, C) < REL, chunk


@pytest.mark.parametrize("mode", ["sequential", "chunked"])
def test_causal(mode: str) -> None:
    model = _model(mode, chunk=8)
    ids = torch.randint(0, VOCAB, (2, 40))
    other = ids.clone()
    other[:, 25] = (other[:, 25] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids), model(other)
    assert (a[:, :25] - b[:, :25]).abs().max() == 0
    assert (a[:, 25:] - b[:, 25:]).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["sequential", "chunked"])
def test_streaming_equals_full(mode: str) -> None:
    model = _model(mode).eval()
    ids = torch.randint(0, VOCAB, (2, 60))
    with torch.no_grad():
        full, final = model(ids, return_state=True)
        streamed, state = run_in_chunks(model, ids, (1, 3, 17, 1, 38))
    assert (streamed - full).abs().max() < 1e-10
    assert (state[PATH] - final[PATH]).abs().max() < 1e-10


def test_gate_params_have_no_weight_decay_and_emit_fallback() -> None:
    graph = archc.to_graph(spec_text(["embed", {"plstm": 2}], d_model=D, vocab=VOCAB))
    flags = {f"{n.path}.{p.name}": p.decay for n in graph.walk() for p in n.params}
    assert not flags[f"{PATH}.bias_t"] and flags[f"{PATH}.weight_t"]
    src = emit_torch(graph)
    assert "class PLSTM(" in src and "class GLA(" not in src


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"plstm": {"mode": "associative"}}, "matrix state"),
        ({"plstm": {"heads": 3}}, "must divide"),
        ({"plstm": {"chunk": 0}}, "chunk"),
    ],
)
def test_bad_settings_are_spec_errors(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError, match=message):
        archc.compile(spec_text(["embed", layer], d_model=D, vocab=VOCAB))
