"""The fused RNN-cell kernels (Triton interpreter on CPU) against naive.py and nn.LSTM/nn.GRU.

Forward, final states and every gradient (relative RMS, float32); the independent oracle
is nn.LSTM / nn.GRU with copied weights, through the torch input projection. H = 20 is
not a multiple of the 16-wide blocks; T = 1, 7, 33; outputs pre-filled with NaN to catch
unwritten elements; saturated gates (pre-activations scaled by 10).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

triton = pytest.importorskip("triton")

from archc.backends.triton.fallback import logged_fallbacks  # noqa: E402
from archc.backends.triton.rnn_cells.naive import (  # noqa: E402
    gru_sequence_naive,
    lstm_sequence_naive,
)
from archc.backends.triton.rnn_cells.op import (  # noqa: E402
    MAX_HIDDEN,
    can_lower,
    gru_sequence,
    launch,
    lstm_sequence,
    use_kernel,
)
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5
GATES = {"lstm": 4, "gru": 3}


def _inputs(cell: str, B: int, T: int, H: int, scale: float, with_h0: bool) -> list[Tensor | None]:
    G = GATES[cell]
    xp = (scale * torch.randn(B, T, G * H)).requires_grad_()
    w = (torch.randn(G * H, H) / H**0.5).requires_grad_()
    h0 = torch.randn(B, H).requires_grad_() if with_h0 else None
    if cell == "lstm":
        c0 = torch.randn(B, H).requires_grad_() if with_h0 else None
        return [xp, w, h0, c0]
    return [xp, w, torch.randn(G * H).requires_grad_(), h0]


def _run(cell: str, ins: list[Tensor | None], naive: bool) -> list[Tensor]:
    if cell == "lstm":
        xp, w, h0, c0 = ins
        B, H = xp.shape[0], w.shape[1]
        if naive:
            h0 = h0 if h0 is not None else torch.zeros(B, H)
            c0 = c0 if c0 is not None else torch.zeros(B, H)
            y, (h, c) = lstm_sequence_naive(xp, w, h0, c0)
        else:
            y, (h, c) = lstm_sequence(xp, w, h0, c0)
        return [y, h, c]
    xp, w, b, h0 = ins
    if naive:
        h0 = h0 if h0 is not None else torch.zeros(xp.shape[0], w.shape[1])
        y, h = gru_sequence_naive(xp, w, b, h0)
    else:
        y, h = gru_sequence(xp, w, b, h0)
    return [y, h]


CASES = [
    # (B, T, H, pre-activation scale, with initial state)
    (1, 1, 16, 1.0, True),
    (2, 7, 20, 1.0, True),  # H not a multiple of 16
    (2, 33, 32, 1.0, False),
    (2, 7, 20, 10.0, True),  # saturated gates
]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("B", "T", "H", "scale", "with_h0"), CASES)
def test_matches_naive(cell: str, B: int, T: int, H: int, scale: float, with_h0: bool) -> None:
    ins = _inputs(cell, B, T, H, scale, with_h0)
    leaves = [t for t in ins if t is not None]
    out = _run(cell, ins, naive=False)
    ref = _run(cell, ins, naive=True)
    for o, r in zip(out, ref, strict=True):
        assert o.shape == r.shape
        assert rel_rms(o, r) < TOL
    gys = [torch.randn_like(r) for r in ref]
    g_out = torch.autograd.grad(out, leaves, gys)
    g_ref = torch.autograd.grad(ref, leaves, gys)
    for name, g, gr in zip(["xproj", "w_hh", "3rd", "4th"], g_out, g_ref, strict=False):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, gr) < TOL, name


@pytest.mark.parametrize("T", [1, 7, 33])
def test_lstm_matches_nn_lstm(T: int) -> None:
    B, Din, H = 2, 5, 20
    ref = torch.nn.LSTM(Din, H, batch_first=True)
    w_ih = ref.weight_ih_l0.detach().clone().requires_grad_()
    w_hh = ref.weight_hh_l0.detach().clone().requires_grad_()
    b = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().clone().requires_grad_()
    x = torch.randn(B, T, Din, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)
    c0 = torch.randn(B, H, requires_grad=True)

    y, (h, c) = lstm_sequence(x @ w_ih.t() + b, w_hh, h0, c0)
    yr, (hr, cr) = ref(x, (h0[None], c0[None]))
    for o, r in [(y, yr), (h, hr[0]), (c, cr[0])]:
        assert rel_rms(o, r) < TOL
    gys = [torch.randn_like(t) for t in (y, h, c)]
    g = torch.autograd.grad([y, h, c], [x, w_ih, w_hh, b, h0, c0], gys)
    params = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0]
    gr = torch.autograd.grad([yr, hr[0], cr[0]], [x, *params, h0, c0], gys)
    for name, a, r in zip(["x", "w_ih", "w_hh", "b", "h0", "c0"], g, gr, strict=True):
        assert rel_rms(a, r) < TOL, name


@pytest.mark.parametrize("T", [1, 7, 33])
def test_gru_matches_nn_gru(T: int) -> None:
    B, Din, H = 2, 5, 20
    ref = torch.nn.GRU(Din, H, batch_first=True)
    w_ih = ref.weight_ih_l0.detach().clone().requires_grad_()
    w_hh = ref.weight_hh_l0.detach().clone().requires_grad_()
    b_ih = ref.bias_ih_l0.detach().clone().requires_grad_()
    b_hh = ref.bias_hh_l0.detach().clone().requires_grad_()
    x = torch.randn(B, T, Din, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)

    y, h = gru_sequence(x @ w_ih.t() + b_ih, w_hh, b_hh, h0)
    yr, hr = ref(x, h0[None])
    assert rel_rms(y, yr) < TOL
    assert rel_rms(h, hr[0]) < TOL
    gys = [torch.randn_like(t) for t in (y, h)]
    g = torch.autograd.grad([y, h], [x, w_ih, w_hh, b_ih, b_hh, h0], gys)
    params = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    gr = torch.autograd.grad([yr, hr[0]], [x, *params, h0], gys)
    for name, a, r in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"], g, gr, strict=True):
        assert rel_rms(a, r) < TOL, name


def _nan(*shape: int) -> Tensor:
    return torch.full(shape, float("nan"))


@pytest.mark.parametrize("T", [1, 7])
def test_lstm_kernels_write_every_output(T: int) -> None:
    B, H = 2, 20
    xp, w = torch.randn(B, T, 4 * H), torch.randn(4 * H, H) / H**0.5
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    y, cs, hT, cT = _nan(B, T, H), _nan(B, T, H), _nan(B, H), _nan(B, H)
    launch("lstm_fwd", B, T, H, xp, w, h0, c0, y, cs, hT, cT)
    yr, (hr, cr) = lstm_sequence_naive(xp, w, h0, c0)
    for o, r in [(y, yr), (hT, hr), (cT, cr), (hT, y[:, -1]), (cs[:, -1], cr)]:
        assert torch.isfinite(o).all()
        assert rel_rms(o, r) < TOL
    dx, dh0, dc0 = _nan(B, T, 4 * H), _nan(B, H), _nan(B, H)
    dy, dhT, dcT = torch.randn(B, T, H), torch.randn(B, H), torch.randn(B, H)
    launch("lstm_bwd", B, T, H, xp, w, h0, c0, y, cs, dy, dhT, dcT, dx, dh0, dc0)
    for o in (dx, dh0, dc0):
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("T", [1, 7])
def test_gru_kernels_write_every_output(T: int) -> None:
    B, H = 2, 20
    xp, w, b = torch.randn(B, T, 3 * H), torch.randn(3 * H, H) / H**0.5, torch.randn(3 * H)
    h0 = torch.randn(B, H)
    y, hT = _nan(B, T, H), _nan(B, H)
    launch("gru_fwd", B, T, H, xp, w, b, h0, y, hT)
    yr, hr = gru_sequence_naive(xp, w, b, h0)
    for o, r in [(y, yr), (hT, hr)]:
        assert torch.isfinite(o).all()
        assert rel_rms(o, r) < TOL
    dx, dg, dh0 = _nan(B, T, 3 * H), _nan(B, T, 3 * H), _nan(B, H)
    dy, dhT = torch.randn(B, T, H), torch.randn(B, H)
    launch("gru_bwd", B, T, H, xp, w, b, h0, y, dy, dhT, dx, dg, dh0)
    for o in (dx, dg, dh0):
        assert torch.isfinite(o).all()


def test_can_lower() -> None:
    assert can_lower("cuda", torch.float32, 20, "lstm") == (True, "ok")
    assert can_lower("cuda", torch.bfloat16, MAX_HIDDEN, "gru")[0]
    ok, why = can_lower("cuda", torch.float32, MAX_HIDDEN + 1, "lstm")
    assert not ok and "hidden size" in why and "nn.LSTM" in why
    ok, why = can_lower("cpu", torch.float32, 20, "lstm")
    assert not ok and "CUDA" in why
    ok, why = can_lower("cuda", torch.float64, 20, "gru")
    assert not ok and "dtype" in why
    ok, why = can_lower("cuda", torch.float32, 20, "rnn_tanh")
    assert not ok and "no fused kernel" in why


def test_fallback_is_logged() -> None:
    assert not use_kernel("cuda", torch.float32, 4096, "lstm")
    _, why = can_lower("cuda", torch.float32, 4096, "lstm")
    assert ("rnn_cells.lstm", why) in logged_fallbacks()  # logged once per (kernel, reason)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="xproj"):
        lstm_sequence(torch.randn(2, 3, 10), torch.randn(8, 2))
    with pytest.raises(ValueError, match="w_hh"):
        gru_sequence(torch.randn(2, 3, 12), torch.randn(12, 3))
