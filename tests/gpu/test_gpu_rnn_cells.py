"""The fused RNN-cell kernels on CUDA: the full matrix (skipped without CUDA).

Against naive.py in float64 (the oracle) and nn.LSTM / nn.GRU (cuDNN, TF32 off) with
copied weights; fp32 and bf16 inputs; H up to MAX_HIDDEN; real autotuning. A timing
comparison against cuDNN is printed, never asserted (benchmarks are not tests).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from archc.backends.triton.testing import rel_rms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEV = "cuda"
GATES = {"lstm": 4, "gru": 3}


def _run(cell: str, ins: list[Tensor], naive: bool) -> list[Tensor]:
    from archc.backends.triton.rnn_cells.naive import gru_sequence_naive, lstm_sequence_naive
    from archc.backends.triton.rnn_cells.op import gru_sequence, lstm_sequence

    if cell == "lstm":
        y, (h, c) = (lstm_sequence_naive if naive else lstm_sequence)(*ins)
        return [y, h, c]
    y, h = (gru_sequence_naive if naive else gru_sequence)(*ins)
    return [y, h]


def _inputs(cell: str, B: int, T: int, H: int, dtype: torch.dtype, scale: float) -> list[Tensor]:
    G = GATES[cell]
    xp = scale * torch.randn(B, T, G * H, device=DEV)
    w = torch.randn(G * H, H, device=DEV) / H**0.5
    h0 = torch.randn(B, H, device=DEV)
    if cell == "lstm":
        ins = [xp, w, h0, torch.randn(B, H, device=DEV)]
    else:
        ins = [xp, w, torch.randn(G * H, device=DEV), h0]
    return [t.to(dtype).requires_grad_() for t in ins]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("B", "T", "H", "scale"),
    [(1, 1, 16, 1.0), (3, 63, 20, 1.0), (17, 257, 64, 1.0), (40, 100, 48, 10.0), (5, 33, 1, 1.0)],
)
def test_matches_naive_f64(
    cell: str, dtype: torch.dtype, B: int, T: int, H: int, scale: float
) -> None:
    from archc.backends.triton.rnn_cells.op import can_lower

    assert can_lower(DEV, dtype, H, cell)[0]
    ins = _inputs(cell, B, T, H, dtype, scale)
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    out = _run(cell, ins, naive=False)
    ref = _run(cell, ref_ins, naive=True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for o, r in zip(out, ref, strict=True):
        assert o.dtype == dtype
        assert rel_rms(o, r) < tol
    gys = [torch.randn_like(r) for r in ref]
    g = torch.autograd.grad(out, ins, [gy.to(dtype) for gy in gys])
    gr = torch.autograd.grad(ref, ref_ins, gys)
    for a, r in zip(g, gr, strict=True):
        assert torch.isfinite(a).all()
        assert rel_rms(a, r) < (1e-4 if dtype == torch.float32 else 5e-2)


def _modules(cell: str, Din: int, H: int) -> torch.nn.Module:
    return (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(Din, H, batch_first=True).to(DEV)


def _fused(cell: str, m: torch.nn.Module, x: Tensor, h0: Tensor, c0: Tensor) -> list[Tensor]:
    from archc.backends.triton.rnn_cells.op import gru_sequence, lstm_sequence

    if cell == "lstm":
        xp = x @ m.weight_ih_l0.t() + m.bias_ih_l0 + m.bias_hh_l0
        y, (h, c) = lstm_sequence(xp, m.weight_hh_l0, h0, c0)
        return [y, h, c]
    xp = x @ m.weight_ih_l0.t() + m.bias_ih_l0
    y, h = gru_sequence(xp, m.weight_hh_l0, m.bias_hh_l0, h0)
    return [y, h]


def _cudnn(cell: str, m: torch.nn.Module, x: Tensor, h0: Tensor, c0: Tensor) -> list[Tensor]:
    if cell == "lstm":
        y, (h, c) = m(x, (h0[None], c0[None]))
        return [y, h[0], c[0]]
    y, h = m(x, h0[None])
    return [y, h[0]]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("B", "T", "H"), [(4, 100, 64), (33, 31, 24)])
def test_matches_cudnn(cell: str, B: int, T: int, H: int) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    m = _modules(cell, 7, H)
    x = torch.randn(B, T, 7, device=DEV, requires_grad=True)
    h0 = torch.randn(B, H, device=DEV, requires_grad=True)
    c0 = torch.randn(B, H, device=DEV, requires_grad=True)
    leaves = [x, h0, *m.parameters()] + ([c0] if cell == "lstm" else [])
    out = _fused(cell, m, x, h0, c0)
    ref = _cudnn(cell, m, x, h0, c0)
    gys = [torch.randn_like(r) for r in ref]
    g = torch.autograd.grad(out, leaves, gys)
    gr = torch.autograd.grad(ref, leaves, gys)
    for o, r in zip([*out, *g], [*ref, *gr], strict=True):
        assert rel_rms(o, r) < 1e-4


def _ms(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("H", [32, 64])
def test_timing_vs_cudnn(cell: str, H: int) -> None:
    """Printed, not asserted: fwd+bwd ms of the fused kernel vs cuDNN (B=64, T=512)."""
    B, T, Din = 64, 512, H
    m = _modules(cell, Din, H)
    x = torch.randn(B, T, Din, device=DEV, requires_grad=True)
    h0 = torch.zeros(B, H, device=DEV, requires_grad=True)
    c0 = torch.zeros(B, H, device=DEV, requires_grad=True)

    def step(run):
        def go() -> None:
            outs = run(cell, m, x, h0, c0)
            sum(o.float().sum() for o in outs).backward()

        return go

    ours, ref = _ms(step(_fused)), _ms(step(_cudnn))
    print(f"\n{cell} B={B} T={T} H={H}: fused {ours:.3f} ms, cuDNN {ref:.3f} ms", end="")
    print(f" ({ours / ref:.2f}x)")
