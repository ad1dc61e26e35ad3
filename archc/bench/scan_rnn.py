"""Dense-recurrence RNN benchmarks: archc's LSTM/GRU/leaky RNN against torch's.

Run: ``python -m archc.bench.scan_rnn [--quick]`` (also part of ``archc bench scan``).
CPU: forward+backward of the compiled model's LSTM module against nn.LSTM, interleaved,
as a ratio of medians. On CPU the compiled LSTM *is* nn.LSTM (FusedLSTM only dispatches
to Triton on CUDA), so the ratio is ~1.0x: the line checks that the subclass costs
nothing. CUDA (when present): the fused persistent kernels (backends/triton/rnn_cells)
against cuDNN (nn.LSTM / nn.GRU) and against a step-by-step torch loop. Not a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from archc.bench.scan import _race

if TYPE_CHECKING:  # torch is imported lazily, as in scan.py (archc bench starts fast)
    import torch

_SPEC = """
model: bench
vocab: 16
d_model: {d}
layers: [embed, {{lstm: {{hidden: {h}}}}}, head]
"""


def _compiled_lstm(d: int, h: int) -> object:
    """The LSTM module a compiled archc model builds (FusedLSTM, an nn.LSTM subclass)."""
    import torch

    import archc

    model = archc.compile(_SPEC.format(d=d, h=h))
    return next(m for m in model.modules() if isinstance(m, torch.nn.LSTM))


def bench_rnn(quick: bool) -> list[str]:
    """CPU: archc LSTM vs nn.LSTM fwd+bwd (B=8, T=4096, D=H=256; quick B=4, T=512, 64).
    CUDA sections when a GPU is present. Returns the printed lines."""
    import torch

    B, T, D = (4, 512, 64) if quick else (8, 4096, 256)
    reps = 5  # the full shape takes ~1.5 s a run on 2 cores
    ours = _compiled_lstm(D, D)
    ref = torch.nn.LSTM(D, D, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # type: ignore[attr-defined]
    x = torch.randn(B, T, D, requires_grad=True)

    def fwd_bwd(m: Callable[..., object]) -> Callable[[], object]:
        def run() -> object:
            y, _ = m(x)  # type: ignore[misc]
            return torch.autograd.grad(y.sum(), [x])

        return run

    med = _race({"archc": fwd_bwd(ours), "nn": fwd_bwd(ref)}, reps, lambda: None)  # type: ignore[arg-type]
    lines = [
        f"archc LSTM vs nn.LSTM, CPU fwd+bwd B={B} T={T} D=H={D} ({type(ours).__name__}):",
        f"  archc {med['archc'] * 1e3:8.1f} ms   nn.LSTM {med['nn'] * 1e3:8.1f} ms   "
        f"{med['archc'] / med['nn']:.2f}x (on CPU the compiled LSTM is nn.LSTM: ~1.0x expected)",
    ]
    if torch.cuda.is_available():
        lines += _bench_cuda(quick)
    return lines


def _lstm_loop(m: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """nn.LSTM's recurrence as a step-by-step torch loop (one layer)."""
    import torch

    xp = torch.nn.functional.linear(x, m.weight_ih_l0, m.bias_ih_l0 + m.bias_hh_l0)
    h = c = x.new_zeros(x.shape[0], m.hidden_size)
    ys = []
    for t in range(x.shape[1]):
        i, f, g, o = (xp[:, t] + h @ m.weight_hh_l0.t()).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, 1)


def _gru_loop(m: torch.nn.GRU, x: torch.Tensor) -> torch.Tensor:
    import torch

    xp = torch.nn.functional.linear(x, m.weight_ih_l0, m.bias_ih_l0)
    h = x.new_zeros(x.shape[0], m.hidden_size)
    ys = []
    for t in range(x.shape[1]):
        xr, xz, xn = xp[:, t].chunk(3, -1)
        hr, hz, hn = (h @ m.weight_hh_l0.t() + m.bias_hh_l0).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        ys.append(h)
    return torch.stack(ys, 1)


def _leaky_loop(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    u = torch.nn.functional.linear(x, m.weight_ih, m.bias)
    alpha, h = 1.0 / m.tau(), x.new_zeros(x.shape[0], m.hidden)
    ys = []
    for t in range(x.shape[1]):
        h = h + alpha * (torch.tanh(u[:, t] + h @ m.weight_hh.t()) - h)
        ys.append(h)
    return torch.stack(ys, 1)


def _bench_cuda(quick: bool) -> list[str]:
    """Fused kernels vs cuDNN vs a torch loop, fwd+bwd, B=64, T=1024 (quick 256)."""
    import torch

    from archc.backends.torch.modules.cells import LeakyRNN
    from archc.backends.torch.modules.fused import FusedGRU, FusedLSTM, fused_leaky_rnn

    B, T = (64, 256) if quick else (64, 1024)
    reps = 5 if quick else 10
    sync = torch.cuda.synchronize
    lines = [
        f"fused RNN cells on {torch.cuda.get_device_name()}, fwd+bwd B={B} T={T} "
        "(ms; (r x) = fused time / that time)"
    ]

    def fb(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            out = fn(x)
            y = out[0] if isinstance(out, tuple) else out
            return torch.autograd.grad(y.float().sum(), [x])

        return run

    for H in (32, 64):
        x = torch.randn(B, T, H, device="cuda", requires_grad=True)
        for name, fused_cls, nn_cls, loop in [
            ("LSTM", FusedLSTM, torch.nn.LSTM, _lstm_loop),
            ("GRU", FusedGRU, torch.nn.GRU, _gru_loop),
        ]:
            fused = fused_cls(H, H, batch_first=True).cuda()
            cudnn = nn_cls(H, H, batch_first=True).cuda()
            cudnn.load_state_dict(fused.state_dict())
            med = _race(
                {
                    "fused": fb(fused, x),
                    "cudnn": fb(cudnn, x),
                    "loop": fb(partial(loop, cudnn), x),
                },
                reps,
                sync,
            )
            lines.append(_row(f"{name} H={H}", med, "cuDNN"))
        leaky = LeakyRNN(H, H).cuda()
        with torch.no_grad():
            for p in leaky.parameters():
                p.copy_(torch.randn_like(p) / 3)
        med = _race(
            {
                "fused": fb(partial(fused_leaky_rnn, leaky, h0=None), x),
                "loop": fb(partial(_leaky_loop, leaky), x),
            },
            reps,
            sync,
        )
        lines.append(_row(f"leaky H={H}", med, None))
    return lines


def _row(label: str, med: dict[str, float], ref: str | None) -> str:
    parts = [f"  {label:<12} fused {med['fused'] * 1e3:7.2f}"]
    if ref is not None:
        parts.append(f"{ref} {med['cudnn'] * 1e3:7.2f} ({med['fused'] / med['cudnn']:.2f}x)")
    parts.append(f"torch loop {med['loop'] * 1e3:8.2f} ({med['fused'] / med['loop']:.2f}x)")
    return "   ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repetitions")
    args = parser.parse_args(argv)
    for line in bench_rnn(args.quick):
        print(line, flush=True)


if __name__ == "__main__":
    main()
