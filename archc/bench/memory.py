"""Titans neural memory: write + read tokens/s, forward + backward, chunked vs per token.

Run: ``python -m archc.bench.memory [--quick] [--device cpu|cuda]``. One NeuralMemory
layer (backends/torch/modules/memory.py: per head a depth-2 MLP memory written by a
gradient step with momentum and decay, then read at the query) runs the same inputs
and weights twice in one process: as the chunked rule (gradients at the chunk-start
memory, C of them as batched matmuls, momentum and decay unrolled over the chunk) and
as the per-token loop (chunk 1: each token's gradient at the memory the previous token
left). The two compute different (both causal) rules for C > 1; they agree exactly at
C = 1, which the tests check. Reported: tokens/s of forward + backward for each and the
ratio chunked / per-token, median of a few repeats after a warm-up.

Not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def _time(fn: Any, repeats: int, sync: Any) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Measure each (T, chunk) configuration; returns one row per configuration."""
    import torch

    from archc.backends.torch.modules.memory import NeuralMemory

    dim, heads, batch = (64, 4, 4) if quick else (128, 4, 8)
    lengths = (128,) if quick else (256, 1024)
    chunks = (16,) if quick else (16, 64)
    repeats = 2 if quick else 3
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for t_len in lengths:
        x = torch.randn(batch, t_len, dim, device=device)
        for chunk in chunks:
            torch.manual_seed(0)
            mem = NeuralMemory(dim, heads, depth=2, chunk=chunk).to(device)
            for p in mem.parameters():
                torch.nn.init.normal_(p, std=dim**-0.5)
            per_s = {}
            for mode in ("chunked", "sequential"):
                mem.mode = mode

                def step(mem: Any = mem, x: Any = x) -> None:
                    mem.zero_grad(set_to_none=True)
                    mem(x).square().mean().backward()

                per_s[mode] = _time(step, repeats, sync)
            tok = batch * t_len
            rows.append(
                {
                    "T": t_len,
                    "chunk": chunk,
                    "chunked_tok_s": tok / per_s["chunked"],
                    "per_token_tok_s": tok / per_s["sequential"],
                    "ratio": per_s["sequential"] / per_s["chunked"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    print("Titans memory (depth-2 MLP, 4 heads), write + read, forward + backward")
    print(f"{'T':>6} {'chunk':>6} {'chunked tok/s':>14} {'per-token tok/s':>16} {'ratio':>7}")
    for r in run(args.quick, args.device):
        print(
            f"{r['T']:>6} {r['chunk']:>6} {r['chunked_tok_s']:>14,.0f} "
            f"{r['per_token_tok_s']:>16,.0f} {r['ratio']:>6.1f}x"
        )


if __name__ == "__main__":
    main()
