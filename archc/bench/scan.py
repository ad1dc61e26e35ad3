"""Scan benchmarks: the diagonal linear scan h_t = a_t * h_{t-1} + b_t, the Newton
(ParaRNN) solver for a diagonal GRU (archc/bench/scan_newton.py), and archc's LSTM/GRU/
leaky RNN against nn.LSTM / cuDNN (archc/bench/scan_rnn.py).

Run: ``python -m archc.bench.scan [--quick]`` (also ``archc bench scan``). CPU:
forward+backward of the chunked and associative modes against the sequential loop,
interleaved in one process and reported as ratios of medians (mode / sequential), so the
machine's speed cancels out. CUDA (when
present): the Triton kernel's achieved bandwidth (bytes the kernel must move / time) as
a fraction of the device's peak. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

# Peak HBM bandwidth used when the device does not report its memory clock and bus
# width: NVIDIA H200 (HBM3e), 4.8 TB/s per the datasheet.
H200_PEAK_BYTES_PER_S = 4.8e12


def _race(
    runs: dict[str, Callable[[], object]], reps: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds per run, each repetition running every candidate in turn."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: allocator, autotuning, Triton compilation
        fn()
    sync()
    for _ in range(reps):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _peak_bandwidth(device: int = 0) -> tuple[float, str]:
    """(bytes/s, where the number came from) for a CUDA device."""
    import torch

    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        # DDR: two transfers per clock.
        return 2.0 * clock_khz * 1e3 * bus_bits / 8, "device properties"
    return H200_PEAK_BYTES_PER_S, "H200 datasheet constant (4.8 TB/s)"


def bench_linear_scan(quick: bool) -> list[str]:
    """Benchmark lines for the diagonal linear scan (CPU modes; CUDA kernel if present)."""
    import torch

    from archc.backends.torch.scans import linear_scan

    lines: list[str] = []
    B, D = 8, 256
    T = 512 if quick else 4096
    reps = 3 if quick else 5
    torch.manual_seed(0)
    a = torch.sigmoid(torch.randn(B, T, D) + 2).requires_grad_()
    b = torch.randn(B, T, D, requires_grad=True)
    h0 = torch.randn(B, D, requires_grad=True)
    gy = torch.randn(B, T, D)

    def fwd_bwd(mode: str) -> Callable[[], object]:
        def run() -> object:
            h = linear_scan(a, b, h0, mode=mode)
            return torch.autograd.grad(h, [a, b, h0], gy)

        return run

    modes = ["sequential", "chunked", "associative"]
    med = _race({m: fwd_bwd(m) for m in modes}, reps, lambda: None)
    threads = torch.get_num_threads()
    lines.append(
        f"linear_scan CPU fwd+bwd B={B} T={T} D={D} fp32 ({threads} threads, median of {reps}):"
    )
    for m in modes:
        lines.append(
            f"  {m:<11} {med[m] * 1e3:8.1f} ms   {med[m] / med['sequential']:.2f}x sequential"
        )
    from archc.bench.memory_bw import elementwise_bandwidth, scan_traffic_bytes

    bw = elementwise_bandwidth()
    moved = scan_traffic_bytes(B * T * D) / med["chunked"]
    lines.append(
        f"  chunked moves >= {scan_traffic_bytes(B * T * D) / 1e6:.0f} MB: {moved / 1e9:.1f} GB/s "
        f"= {moved / bw:.0%} of torch.add's {bw / 1e9:.1f} GB/s here (a bound of "
        f"{scan_traffic_bytes(B * T * D) / bw * 1e3:.1f} ms for any torch-op scan)"
    )

    if torch.cuda.is_available():
        lines += _bench_cuda(quick)
    else:
        lines.append("linear_scan CUDA: no CUDA device, Triton kernel not measured")
    return lines


def _bench_cuda(quick: bool) -> list[str]:
    import torch

    from archc.backends.triton.diag_scan.op import diag_scan_bwd, diag_scan_fwd

    lines = []
    peak, source = _peak_bandwidth()
    name = torch.cuda.get_device_name()
    lines.append(f"diag_scan Triton on {name}, peak {peak / 1e12:.2f} TB/s ({source}):")
    sync = torch.cuda.synchronize
    shapes = (
        [(8, 4096, 256), (8, 4096, 4096)]
        if quick
        else [(8, 4096, 256), (8, 4096, 4096), (16, 8192, 4096)]
    )
    for dtype in (torch.float32, torch.bfloat16):
        for B, T, D in shapes:
            a = torch.sigmoid(torch.randn(B, T, D, device="cuda") + 2).to(dtype)
            b = torch.randn(B, T, D, device="cuda").to(dtype)
            h = torch.empty_like(b)
            gh = torch.randn_like(b)
            ga, gb = torch.empty_like(a), torch.empty_like(b)
            diag_scan_fwd(a, b, None, h)
            med = _race(
                {
                    "fwd": lambda a=a, b=b, h=h: diag_scan_fwd(a, b, None, h),
                    "bwd": lambda a=a, h=h, gh=gh, ga=ga, gb=gb: diag_scan_bwd(
                        a, h, None, gh, ga, gb, None
                    ),
                },
                reps=10 if quick else 30,
                sync=sync,
            )
            n = B * T * D * a.element_size()
            moved = {
                "fwd": 3 * n,
                "bwd": 5 * n,
            }  # fwd: read a, b, write h; bwd: read a, h, gh, write ga, gb
            for k in ("fwd", "bwd"):
                bw = moved[k] / med[k]
                lines.append(
                    f"  {k} {str(dtype).removeprefix('torch.'):<8} B={B} T={T} D={D}: "
                    f"{med[k] * 1e3:7.3f} ms  {bw / 1e12:5.2f} TB/s  {bw / peak:5.1%} of peak"
                )
    # Chunked GLA / delta rule kernels vs sequential and torch.compile (scan_matrix.py).
    from archc.bench.scan_matrix import bench_matrix_cuda

    lines += bench_matrix_cuda(quick)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repetitions")
    args = parser.parse_args(argv)
    from archc.bench.scan_newton import bench_newton
    from archc.bench.scan_rnn import bench_rnn

    for bench in (bench_linear_scan, bench_newton, bench_rnn):
        for line in bench(args.quick):
            print(line, flush=True)


if __name__ == "__main__":
    main()
