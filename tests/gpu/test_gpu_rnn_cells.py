"""The fused RNN-cell kernels on CUDA: the full matrix (skipped without CUDA).

Against naive.py in float64 (the oracle) and nn.LSTM / nn.GRU (cuDNN, TF32 off) with
copied weights; fp32 and bf16 inputs; H up to MAX_HIDDEN; real autotuning. The leaky
(tau) RNN kernel likewise, and a compiled specs/lstm.yaml that really dispatches to the
kernel. Timings against cuDNN / the torch loop are printed, never asserted.
"""

from __future__ import annotations

from pathlib import Path

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


# ----------------------------------------------------------------------------- leaky RNN


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("B", "T", "H", "shift"),
    [
        (1, 1, 16, 0.0),
        (3, 63, 12, 0.0),
        (17, 257, 64, 0.0),
        (40, 100, 48, -30.0),  # tau -> 1: the plain RNN
        (5, 257, 33, 8.0),  # slow units
        (5, 63, 1, 1000.0),  # tau ~ 1000: h barely moves
    ],
)
def test_leaky_matches_naive_f64(
    nonlinearity: str, dtype: torch.dtype, B: int, T: int, H: int, shift: float
) -> None:
    from archc.backends.triton.rnn_cells.naive import leaky_sequence_naive
    from archc.backends.triton.rnn_cells.op import can_lower, leaky_sequence

    assert can_lower(DEV, dtype, H, "leaky")[0]
    u = torch.randn(B, T, H, device=DEV)
    w = 0.9 * torch.randn(H, H, device=DEV) / H**0.5
    tau_raw = torch.randn(H, device=DEV) + shift
    ins = [t.to(dtype).requires_grad_() for t in (u, w, tau_raw, torch.randn(B, H, device=DEV))]
    ref_ins = [t.detach().double().requires_grad_() for t in ins]

    def run(u, w, tau_raw, h0, fn):  # type: ignore[no-untyped-def]
        alpha = 1.0 / (1.0 + torch.nn.functional.softplus(tau_raw))
        return fn(u, w, alpha, h0, nonlinearity)

    out = run(*ins, leaky_sequence)
    ref = run(*ref_ins, leaky_sequence_naive)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for o, r in zip(out, ref, strict=True):
        assert o.dtype == dtype
        assert rel_rms(o, r) < tol
    gys = [torch.randn_like(r) for r in ref]
    g = torch.autograd.grad(out, ins, [gy.to(dtype) for gy in gys])
    gr = torch.autograd.grad(ref, ref_ins, gys)
    for a, r in zip(g, gr, strict=True):
        assert torch.isfinite(a).all()
        assert rel_rms(a, r, floor=1e-8) < (1e-4 if dtype == torch.float32 else 5e-2)


def test_leaky_module_dispatches() -> None:
    """fused_leaky_rnn on a LeakyRNN matches its torch loop (forward and gradients)."""
    from archc.backends.torch.modules.cells import LeakyRNN
    from archc.backends.torch.modules.fused import fused_leaky_rnn

    torch.backends.cuda.matmul.allow_tf32 = False
    m = LeakyRNN(7, 40).to(DEV)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) / 3)
    x = torch.randn(6, 50, 7, device=DEV, requires_grad=True)
    out = fused_leaky_rnn(m, x, None)
    assert out is not None
    ref = _leaky_loop(m, x)
    gys = [torch.randn_like(r) for r in ref]
    leaves = [x, *m.parameters()]
    g = torch.autograd.grad(out, leaves, gys)
    gr = torch.autograd.grad(ref, leaves, gys)
    for a, r in zip([*out, *g], [*ref, *gr], strict=True):
        assert rel_rms(a, r) < 1e-4


def _leaky_loop(m: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """LeakyRNN's recurrence as a plain loop (its forward may itself be fused)."""
    u = torch.nn.functional.linear(x, m.weight_ih, m.bias)
    alpha, h = 1.0 / m.tau(), x.new_zeros(x.shape[0], m.hidden)
    outs = []
    for t in range(x.shape[1]):
        h = h + alpha * (torch.tanh(u[:, t] + h @ m.weight_hh.t()) - h)
        outs.append(h)
    return torch.stack(outs, 1), h


# ----------------------------------------------------------------------------- compiled model


def test_compiled_lstm_spec_dispatches_to_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """specs/lstm.yaml (hidden 64, 2 layers) compiled on CUDA runs the fused kernel (counted)
    and matches the same weights through nn.LSTM on CPU, forward and a training step."""
    import archc
    from archc.backends.torch.modules.fused import FusedLSTM
    from archc.backends.triton.rnn_cells import op

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    calls = []
    real = op.lstm_sequence

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(op, "lstm_sequence", counted)
    spec = str(Path(__file__).resolve().parents[2] / "specs" / "lstm.yaml")
    over = ["layers[1].lstm.hidden=64"]
    cpu = archc.compile(spec, over, seed=0)
    gpu = archc.compile(spec, over, seed=0, device="cuda").to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    assert any(isinstance(m, FusedLSTM) for m in gpu.modules())
    x = torch.randint(0, 256, (4, 100))
    y_gpu = gpu(x.to(DEV))
    assert len(calls) == 2  # one fused kernel call per layer
    y_cpu = cpu(x)
    assert rel_rms(y_gpu.cpu(), y_cpu) < 1e-4
    y_gpu.float().logsumexp(-1).mean().backward()
    y_cpu.logsumexp(-1).mean().backward()
    gp, cp = dict(gpu.named_parameters()), dict(cpu.named_parameters())
    for name in gp:
        assert rel_rms(gp[name].grad.cpu(), cp[name].grad) < 1e-3, name


@pytest.mark.parametrize("H", [32, 64])
def test_leaky_timing_vs_loop(H: int) -> None:
    """Printed, not asserted: fwd+bwd ms of the fused leaky kernel vs the torch loop."""
    from archc.backends.torch.modules.cells import LeakyRNN
    from archc.backends.torch.modules.fused import fused_leaky_rnn

    m = LeakyRNN(H, H).to(DEV)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) / 3)
    x = torch.randn(64, 512, H, device=DEV, requires_grad=True)

    def fused() -> None:
        sum(o.sum() for o in fused_leaky_rnn(m, x, None)).backward()  # type: ignore[union-attr]

    def loop() -> None:
        sum(o.sum() for o in _leaky_loop(m, x)).backward()

    ours, ref = _ms(fused, 5), _ms(loop, 2)
    print(f"\nleaky B=64 T=512 H={H}: fused {ours:.3f} ms, torch loop {ref:.3f} ms", end="")
    print(f" ({ref / ours:.1f}x faster)")
