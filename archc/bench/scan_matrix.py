"""Matrix-state scan benchmark (CUDA only): chunked GLA and the chunked delta rule.

Forward+backward of the Triton kernels (backends/triton/gla_scan, delta_scan) against
the torch sequential loop (the reference), the torch chunked form in eager mode, and
torch.compile of that loop-free chunked form. torch.compile is not given the step loop
itself: Inductor would unroll T steps (DESIGN §8). Candidates are interleaved in one
process (archc.bench.scan._race) and reported as ratios of medians to sequential. Called
from archc.bench.scan's CUDA section; not a test: nothing here asserts a time.
"""

from __future__ import annotations

from collections.abc import Callable


def bench_matrix_cuda(quick: bool) -> list[str]:
    """Benchmark lines for chunked GLA / delta on the current CUDA device."""
    import torch
    import torch.nn.functional as F

    from archc.backends.torch.scans.matrix import delta_scan, gla_scan
    from archc.bench.scan import _race

    B, H, dk, dv = 4, 8, 64, 64
    T = 512 if quick else 2048
    reps = 3 if quick else 10
    torch.manual_seed(0)
    dev = "cuda"
    q = torch.randn(B, H, T, dk, device=dev)
    k = torch.randn(B, H, T, dk, device=dev)
    v = torch.randn(B, H, T, dv, device=dev)
    S0 = torch.randn(B, H, dk, dv, device=dev)
    go, gS = torch.randn(B, H, T, dv, device=dev), torch.randn(B, H, dk, dv, device=dev)
    cases = {
        "gla": (gla_scan, [q, k, v, F.logsigmoid(torch.randn_like(k) + 2.0), S0]),
        "delta": (
            delta_scan,
            [q, F.normalize(k, dim=-1), v, torch.rand(B, H, T, device=dev), S0],
        ),
    }
    lines = [
        f"matrix scans CUDA fwd+bwd B={B} H={H} T={T} dk={dk} dv={dv} fp32 (median of {reps}):"
    ]
    for name, (fn, ins) in cases.items():
        leaves = [x.detach().requires_grad_() for x in ins]

        def fwd_bwd(run: Callable[..., tuple], leaves: list = leaves) -> Callable[[], object]:
            def go_() -> object:
                o, S = run(*leaves)
                return torch.autograd.grad((o, S), leaves, (go, gS))

            return go_

        chunked = lambda *a, fn=fn: fn(*a, mode="chunked", kernel=False)  # noqa: E731
        runs = {
            "triton": fwd_bwd(lambda *a, fn=fn: fn(*a, mode="chunked")),
            "torch chunked": fwd_bwd(chunked),
            "torch.compile": fwd_bwd(torch.compile(chunked)),
            "sequential": fwd_bwd(lambda *a, fn=fn: fn(*a, mode="sequential")),
        }
        med = _race(runs, reps, torch.cuda.synchronize)
        for cand, t in med.items():
            lines.append(
                f"  {name:<5} {cand:<13} {t * 1e3:8.2f} ms   "
                f"{t / med['sequential']:.3f}x sequential"
            )
    return lines
