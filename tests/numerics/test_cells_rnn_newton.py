"""Structured tanh RNNs (`rnn: {recurrent: diagonal | block}`, cells diag_rnn / block_rnn)
against torch.nn.RNN with the equivalent dense recurrent matrix (diag(u), blockdiag(U))
in float64: outputs, final state and gradients, in the sequential and Newton modes;
Newton agrees up to T = 1024 and converges in a handful of iterations; varlen batches
equal per-sequence runs; streaming equals the full sequence; spec errors are located.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from oracle_helpers import run_in_chunks, spec_text

import archc
from archc.backends.torch.modules.cells_newton import StructuredRNN
from archc.backends.torch.scans import newton as nw
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError

D, H, K = 6, 12, 4


def _cell(kind: str, mode: str, seed: int = 0) -> StructuredRNN:
    torch.manual_seed(seed)
    common: dict[str, Any] = {"mode": mode, "iters": 64, "tol": 1e-12}
    cell = StructuredRNN(D, H, None if kind == "diag" else K, **common)
    cell = cell.double()
    with torch.no_grad():
        cell.weight_ih.normal_(0.0, 0.5)
        cell.bias.normal_(0.0, 0.1)  # type: ignore[union-attr]
        if kind == "diag":
            cell.weight_hh.uniform_(-0.9, 0.9)
        else:
            cell.weight_hh.uniform_(-(K**-0.5), K**-0.5)
    return cell


def _oracle(cell: StructuredRNN) -> torch.nn.RNN:
    """nn.RNN with W_hh = diag(u) or blockdiag(U): the same function, torch's kernel."""
    rnn = torch.nn.RNN(D, H, batch_first=True).double()
    u = cell.weight_hh.detach()
    w_hh = torch.diag(u) if u.dim() == 1 else torch.block_diag(*u)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(cell.weight_ih)
        rnn.weight_hh_l0.copy_(w_hh)
        rnn.bias_ih_l0.copy_(cell.bias)  # type: ignore[arg-type]
        rnn.bias_hh_l0.zero_()
    return rnn


@pytest.mark.parametrize("kind", ["diag", "block"])
@pytest.mark.parametrize("mode", ["sequential", "newton"])
@pytest.mark.parametrize("t", [1, 63, 257])
def test_equals_nn_rnn(kind: str, mode: str, t: int) -> None:
    cell = _cell(kind, mode)
    rnn = _oracle(cell)
    x = torch.randn(2, t, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, H, dtype=torch.float64) * 0.5
    y, hT = cell(x, h0)
    y_ref, hT_ref = rnn(x, h0[None])
    assert rel_rms(y.detach(), y_ref.detach()) < 1e-9
    assert rel_rms(hT.detach(), hT_ref[0].detach()) < 1e-9
    w = torch.randn_like(y_ref)
    gx, gw, gb = torch.autograd.grad((y * w).sum(), [x, cell.weight_ih, cell.bias])
    gx_ref, gw_ref, gb_ref = torch.autograd.grad(
        (y_ref * w).sum(), [x, rnn.weight_ih_l0, rnn.bias_ih_l0]
    )
    for g, ref in ((gx, gx_ref), (gw, gw_ref), (gb, gb_ref)):
        assert rel_rms(g, ref) < 1e-8
    # The recurrent gradient: nn.RNN's dense one restricted to the structure.
    x2 = x.detach().requires_grad_()
    (gu,) = torch.autograd.grad((cell(x2, h0)[0] * w).sum(), [cell.weight_hh])
    (g_dense,) = torch.autograd.grad((rnn(x2, h0[None])[0] * w).sum(), [rnn.weight_hh_l0])
    if kind == "diag":
        ref_u = g_dense.diagonal()
    else:
        ref_u = torch.stack(
            [g_dense[i * K : (i + 1) * K, i * K : (i + 1) * K] for i in range(H // K)]
        )
    assert rel_rms(gu, ref_u) < 1e-8


@pytest.mark.parametrize("kind", ["diag", "block"])
def test_newton_long_sequence_converges_fast(kind: str) -> None:
    cell = _cell(kind, "newton").float()
    x = torch.randn(2, 1024, D)
    u = torch.nn.functional.linear(x, cell.weight_ih, cell.bias)
    with torch.no_grad():
        y_seq, _ = _cell(kind, "sequential").float()(x)
        h0 = torch.zeros(2, H)
        if kind == "diag":
            p = nw.DiagRNNParams(cell.weight_ih, cell.weight_hh, cell.bias)  # type: ignore[arg-type]
            step, jac = nw.diag_tanh_rnn_step(p)
            _, info = nw.newton_scan(step, jac, u, h0, iters=32, tol=1e-6)
        else:
            p = nw.BlockRNNParams(cell.weight_ih, cell.weight_hh, cell.bias)  # type: ignore[arg-type]
            step, jac = nw.block_tanh_rnn_step(p)
            _, info = nw.newton_scan(step, jac, u, h0, iters=32, tol=1e-6, jac="blockdiag")
        y_new, _ = cell(x)
    assert info.converged and info.iterations <= 8, info
    assert (y_new - y_seq).abs().max().item() < 1e-4


@pytest.mark.parametrize("kind", ["diag", "block"])
@pytest.mark.parametrize("mode", ["sequential", "newton"])
def test_varlen_equals_separate_runs(kind: str, mode: str) -> None:
    cell = _cell(kind, mode)
    t, lengths = 23, [23, 18, 1]
    x = torch.randn(3, t, D, dtype=torch.float64, requires_grad=True)
    y, hT = cell(x, lengths=torch.tensor(lengths))
    w = torch.randn_like(y)
    (gx,) = torch.autograd.grad((y * w).sum(), [x])
    for b, n in enumerate(lengths):
        xb = x[b : b + 1, :n].detach().requires_grad_()
        yb, hb = cell(xb)
        assert rel_rms(y[b, :n].detach(), yb[0].detach()) < 1e-10
        assert y[b, n:].abs().max().item() == 0.0 if n < t else True
        assert rel_rms(hT[b].detach(), hb[0].detach()) < 1e-10
        (gb,) = torch.autograd.grad((yb * w[b : b + 1, :n]).sum(), [xb])
        assert rel_rms(gx[b, :n], gb[0]) < 1e-9
        assert gx[b, n:].abs().max().item() == 0.0 if n < t else True


@pytest.mark.parametrize("layer", [{"recurrent": "diagonal"}, {"recurrent": "block", "block": 3}])
def test_compiled_model_streams(layer: dict[str, Any]) -> None:
    spec = spec_text(
        ["embed", {"rnn": {"hidden": 12, "mode": "newton", **layer}}, {"head": {"out": 5}}],
        d_model=8,
        vocab=7,
    )
    model = archc.compile(spec).double()
    ids = torch.randint(0, 7, (2, 40))
    with torch.no_grad():
        full = model(ids)
        chunked, _ = run_in_chunks(model, ids, (1, 16, 23))
    assert rel_rms(chunked, full) < 1e-6  # newton (tol 1e-6) vs the exact streaming step


@pytest.mark.parametrize(
    ("layer", "needle"),
    [
        ({"recurrent": "block"}, "recurrent: block needs 'block' dividing hidden"),
        ({"recurrent": "block", "block": 5}, "recurrent: block needs 'block' dividing hidden"),
        ({"recurrent": "diagonal", "act": "relu"}, "is a tanh RNN"),
        ({"block": 4}, "applies to recurrent: diagonal or block only"),
        ({"mode": "newton"}, "mode 'newton' is reserved"),
    ],
)
def test_spec_errors(layer: dict[str, Any], needle: str) -> None:
    spec = spec_text(["embed", {"rnn": {"hidden": 12, **layer}}, "head"], d_model=8, vocab=7)
    with pytest.raises(DiagnosticError, match=needle):
        archc.to_graph(spec)


@pytest.mark.parametrize("kind", ["diag", "block"])
@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_weight_extremes_stay_exact(kind: str, scale: float) -> None:
    """Recurrent and input weights times 0.1 (near-linear) and 10 (saturated tanh):
    Newton still matches nn.RNN and stays finite."""
    cell = _cell(kind, "newton")
    with torch.no_grad():
        cell.weight_hh.mul_(scale)
        cell.weight_ih.mul_(scale)
    rnn = _oracle(cell)
    x = torch.randn(2, 63, D, dtype=torch.float64)
    with torch.no_grad():
        y, hT = cell(x)
        y_ref, hT_ref = rnn(x)
    assert torch.isfinite(y).all()
    assert rel_rms(y, y_ref) < 1e-9 and rel_rms(hT, hT_ref[0]) < 1e-9
