"""Foundation benchmarks: check cold start, spec -> module time, compiled vs hand-written.

Run: ``python -m archc.bench.foundation [--quick]``. Timings are medians of interleaved
repetitions in one process; speed is reported as ratios (compiled / hand-written), so
the machine's own speed cancels out. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def median_time(fn: Callable[[], object], reps: int) -> float:
    """The median wall time of `reps` calls of `fn`, in seconds."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_cold_start(spec: Path, reps: int) -> float:
    """Seconds for a fresh `python -m archc check SPEC` process (median)."""
    cmd = [sys.executable, "-m", "archc", "check", "-q", str(spec)]
    return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), reps)


def spec_to_module(layers: int, reps: int) -> tuple[float, int]:
    """Seconds from spec text to an initialised nn.Module for an N-layer GPT (median)."""
    import archc
    from archc.bench.references import GPT_SPEC

    text = GPT_SPEC.format(d=128, heads=4, n=layers)
    archc.compile(text)  # warm imports
    secs = median_time(lambda: archc.compile(text), reps)
    return secs, len(archc.to_graph(text))


def race(compiled: object, reference: object, x: object, iters: int) -> tuple[float, float, float]:
    """Interleaved fwd+bwd medians (compiled, reference) and their max output difference."""
    import torch

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(x).float().square().mean().backward()

        return run

    with torch.no_grad():
        diff = (compiled(x) - reference(x)).abs().max().item()  # type: ignore[operator]
    runs = {"c": step(compiled), "r": step(reference)}  # type: ignore[arg-type]
    for fn in runs.values():
        for _ in range(3):
            fn()  # warm-up
    times: dict[str, list[float]] = {"c": [], "r": []}
    for i in range(iters):
        order = ("c", "r") if i % 2 == 0 else ("r", "c")  # alternate to cancel drift
        for k in order:
            t0 = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - t0)
    return statistics.median(times["c"]), statistics.median(times["r"]), diff


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    import torch

    import archc
    from archc.bench.references import GPT_SPEC, LSTM_SPEC, HandGPT, HandLSTM, copy_by_position

    torch.manual_seed(0)
    reps, iters = (3, 10) if args.quick else (7, 30)
    spec = REPO / "specs" / "gpt.yaml"
    if spec.exists():
        cold = check_cold_start(spec, reps)
        print(f"archc check cold start ({spec.name}): {cold * 1e3:.0f} ms (median of {reps})")
    secs, nodes = spec_to_module(48, reps)
    print(f"spec -> nn.Module, 48-layer GPT ({nodes} IR nodes): {secs * 1e3:.0f} ms")

    b, t = 8, 128
    tokens = torch.randint(0, 256, (b, t))
    gpt = archc.compile(GPT_SPEC.format(d=128, heads=4, n=4))
    hand_gpt = HandGPT(256, 128, 4, 4)
    copy_by_position(gpt, hand_gpt)
    c, r, diff = race(gpt, hand_gpt, tokens, iters)
    print(
        f"GPT  d=128 L=4 B={b} T={t} fwd+bwd: compiled {c * 1e3:.1f} ms, "
        f"hand-written {r * 1e3:.1f} ms, ratio {c / r:.3f} (max |diff| {diff:.1e})"
    )

    lstm = archc.compile(LSTM_SPEC.format(d=128, h=256))
    hand_lstm = HandLSTM(256, 128, 256)
    copy_by_position(lstm, hand_lstm)
    c, r, diff = race(lstm, hand_lstm, tokens, iters)
    print(
        f"LSTM d=128 h=256 x2 B={b} T={t} fwd+bwd: compiled {c * 1e3:.1f} ms, "
        f"hand-written {r * 1e3:.1f} ms, ratio {c / r:.3f} (max |diff| {diff:.1e})"
    )
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
