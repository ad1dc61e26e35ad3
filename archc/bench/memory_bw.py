"""This machine's memory bandwidth as torch sees it, to put scan timings in proportion.

A diagonal scan over (B, T, D) floats does a few flops per element it moves, so on a
CPU its time is set by memory traffic; comparing its bytes per second with the
bandwidth of a plain elementwise op in the same process says how close it is to what
the machine can do at all.
"""

from __future__ import annotations

import statistics
import time


def elementwise_bandwidth(elements: int = 1 << 25, reps: int = 5) -> float:
    """Bytes per second of ``torch.add(x, y, out=z)`` on float32 vectors of `elements`
    (two reads and one write per element), median of `reps` after a warm-up."""
    import torch

    x, y = torch.randn(elements), torch.randn(elements)
    z = torch.empty_like(x)
    torch.add(x, y, out=z)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.add(x, y, out=z)
        times.append(time.perf_counter() - t0)
    return 3 * 4 * elements / statistics.median(times)


def scan_traffic_bytes(elements: int) -> int:
    """Bytes a diagonal scan forward + backward must move at least, float32: forward
    reads a, b and writes h; backward reads a, h, the output gradient and writes the
    gradients of a and b (8 passes over the (B, T, D) elements)."""
    return 8 * 4 * elements
