"""Newton-mode (ParaRNN) diagonal GRU vs the sequential Python loop of the same cell.

Run: ``python -m archc.bench.scan_newton [--quick]``. CPU forward+backward of
``newton_scan`` (implicit adjoint backward) against the step-by-step loop with plain
autograd (BPTT), interleaved in one process; reported as a ratio (newton / loop) of
medians so the machine's speed cancels out, plus the Newton iteration count and the
max |difference| of the outputs. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def _race(runs: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each run, alternating the order every repetition (drift)."""
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for i in range(reps):
        for k in keys if i % 2 == 0 else reversed(keys):
            t0 = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_newton(quick: bool) -> list[str]:
    """Race Newton vs the loop for a diagonal GRU; returns the printed result lines.

    Full: B=8, T=4096, D=H=256. Quick: B=4, T=512, D=H=64.
    """
    import torch

    from archc.backends.torch.scans.newton import (
        diag_gru_inputs,
        diag_gru_step,
        diag_gru_step_jac,
        init_diag_gru,
        newton_scan,
        sequential_scan,
    )

    torch.manual_seed(0)
    b, t, d, reps = (4, 512, 64, 5) if quick else (8, 4096, 256, 3)
    p = init_diag_gru(d, d)
    step, jac = diag_gru_step(p)
    both = diag_gru_step_jac(p)
    x = torch.randn(b, t, d, requires_grad=True)
    h0 = torch.zeros(b, d)
    infos = []

    # The recurrence alone: the pre-projected inputs are the leaf. The input projection
    # (3H x D per token, forward and backward) costs both sides the same and is most of
    # the layer's work on a CPU, so the layer ratio understates what Newton changes.
    xp_leaf = diag_gru_inputs(p, x).detach().requires_grad_()

    def newton(layer: bool) -> Callable[[], None]:
        def run() -> None:
            xp = diag_gru_inputs(p, x) if layer else xp_leaf
            out, info = newton_scan(step, jac, xp, h0, step_jac=both)
            infos.append(info)
            out.square().mean().backward()

        return run

    def loop(layer: bool) -> Callable[[], None]:
        def run() -> None:
            xp = diag_gru_inputs(p, x) if layer else xp_leaf
            sequential_scan(step, xp, h0).square().mean().backward()

        return run

    with torch.no_grad():
        xp = diag_gru_inputs(p, x)
        diff = (newton_scan(step, jac, xp, h0)[0] - sequential_scan(step, xp, h0)).abs().max()
    med = _race(
        {
            "newton": newton(True),
            "loop": loop(True),
            "newton_rec": newton(False),
            "loop_rec": loop(False),
        },
        reps,
    )
    its = sorted({i.iterations for i in infos})
    fell = sum(i.fell_back for i in infos)
    head = f"diag-GRU B={b} T={t} D={d} fwd+bwd (CPU, {torch.get_num_threads()} threads, "
    return [
        f"{head}median of {reps}, interleaved):",
        f"  layer (projection + recurrence): newton {med['newton'] * 1e3:.1f} ms, "
        f"sequential loop {med['loop'] * 1e3:.1f} ms, ratio newton/loop "
        f"{med['newton'] / med['loop']:.3f}",
        f"  recurrence only (projected inputs given): newton {med['newton_rec'] * 1e3:.1f} ms, "
        f"sequential loop {med['loop_rec'] * 1e3:.1f} ms, ratio newton/loop "
        f"{med['newton_rec'] / med['loop_rec']:.3f}",
        f"  newton iterations {its} (tol 1e-6, float32), fell back {fell}/{len(infos)}, "
        f"max |newton - loop| {diff.item():.1e}",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small shapes, fewer repetitions")
    args = ap.parse_args(argv)
    for line in bench_newton(args.quick):
        print(line)


if __name__ == "__main__":
    main()
