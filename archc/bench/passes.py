"""Pass benchmarks: what -O2 does to the spec library, side by side with -O0.

Run: ``archc bench passes [--quick]`` (or ``python -m archc.bench.passes``). For every
spec in specs/ (the YAML spelling; the .arch twins build the same graphs), in one
process: IR node count (every node, regions included) and parameter-free op count at
-O0 and -O2; CPU forward+backward time of the two modules (d_model=64 where the
spec takes that override) on a (B=2, T=32) batch, interleaved, best of a few reps,
as the ratio -O2 / -O0 (below 1: -O2 is faster), with the largest output
difference as a check that both compute the same function; then the time of the full
-O2 pipeline for a 48-layer GPT (the one `archc bench foundation` builds). Not a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from archc.bench.foundation import median_time
from archc.bench.report import text_table

REPO = Path(__file__).resolve().parents[2]
B, T = 2, 32
TINY_D = 64  # d_model override: tiny shapes keep the library's timing short
# A spec whose single -O0 forward+backward takes longer than this is not timed.
SLOW_S = 3.0


def _counts(graph: object) -> tuple[int, int]:
    """(nodes, parameter-free nodes) of a graph, regions included."""
    nodes = list(graph.walk())  # type: ignore[attr-defined]
    return len(nodes), sum(1 for n in nodes if not n.params)


def _batch(model: object) -> object:
    from archc.search.latency import random_batch

    return random_batch(model, B, T, "cpu")


def _fwd_bwd(model: object, x: object) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        model(x).float().square().mean().backward()  # type: ignore[operator]

    return step


def _race(o0: object, o2: object, x: object, iters: int) -> tuple[float, float]:
    """Interleaved fwd+bwd times (seconds) of the -O0 and -O2 modules: the fastest of
    `iters` each, since other load on a shared machine only ever adds time."""
    runs = {"0": _fwd_bwd(o0, x), "2": _fwd_bwd(o2, x)}
    for fn in runs.values():
        fn()  # warm-up (twice: first calls allocate)
        fn()
    times: dict[str, list[float]] = {"0": [], "2": []}
    for i in range(iters):
        for k in ("0", "2") if i % 2 == 0 else ("2", "0"):  # alternate to cancel drift
            t0 = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - t0)
    return min(times["0"]), min(times["2"])


def _max_diff(o0: object, o2: object, x: object) -> float | None:
    """Largest |-O2 - -O0| output difference with -O0's weights in both (None when the
    two modules do not hold the same parameters, e.g. after weight tying)."""
    import torch

    a, b = o0.state_dict(), o2.state_dict()  # type: ignore[attr-defined]
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return None
    o2.load_state_dict(a)  # type: ignore[attr-defined]
    with torch.no_grad():
        return (o2(x) - o0(x)).abs().max().item()  # type: ignore[operator]


def _tiny(path: Path) -> object:
    """The spec at d_model=TINY_D where it takes the override (widths that must divide
    it may refuse), else as written."""
    import archc
    from archc.diagnostics import DiagnosticError

    try:
        spec = archc.load(path, [f"d_model={TINY_D}"])
        archc.to_graph(spec)  # some widths only fail to fit when the graph is built
        return spec
    except DiagnosticError:
        return archc.load(path)


def spec_row(path: Path, iters: int) -> list[str]:
    """One table row for `path`: counts at -O0/-O2 and the fwd+bwd time ratio."""
    import archc

    spec = _tiny(path)
    o0 = archc.compile(spec, seed=0, opt_level=0, seq_len=T).eval()
    o2 = archc.compile(spec, seed=0, opt_level=2, seq_len=T).eval()
    n0, f0 = _counts(o0.graph)
    n2, f2 = _counts(o2.graph)
    row = [path.name, str(n0), str(n2), str(f0), str(f2)]
    x = _batch(o0)
    diff = _max_diff(o0, o2, x)
    single = median_time(_fwd_bwd(o0, x), 1)
    if single > SLOW_S:
        return [*row, f"skipped ({single:.1f} s/step)", "", _fmt_diff(diff)]
    t0, t2 = _race(o0, o2, x, iters)
    return [*row, f"{t0 * 1e3:.1f}", f"{t2 / t0:.3f}", _fmt_diff(diff)]


def _fmt_diff(diff: float | None) -> str:
    return "n/a" if diff is None else f"{diff:.1e}"


def pipeline_times(layers: int, reps: int) -> dict[str, float]:
    """Median seconds for an N-layer GPT: spec -> graph; -> graph + -O2 passes;
    -> graph + passes + lowering to an nn.Module (archc.compile)."""
    import archc
    from archc.api import optimize
    from archc.bench.references import GPT_SPEC

    text = GPT_SPEC.format(d=128, heads=4, n=layers)
    spec = archc.load(text)
    archc.compile(spec)  # warm imports and caches
    graph = archc.to_graph(spec)
    return {
        "nodes": float(len(graph)),
        "build": median_time(lambda: archc.to_graph(spec), reps),
        "passes": median_time(lambda: optimize(graph), reps),
        "build+passes": median_time(lambda: optimize(archc.to_graph(spec)), reps),
        "build+passes+lower": median_time(lambda: archc.compile(spec), reps),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    import torch

    from archc.passes.pipeline import O2

    iters, reps = (7, 3) if args.quick else (21, 7)
    print(f"-O2 = {O2}")
    head = ["spec", "nodes -O0", "-O2", "param-free -O0", "-O2", "fwd+bwd -O0 ms"]
    rows = [[*head, "-O2/-O0", "max|diff|"]]
    for path in sorted((REPO / "specs").glob("*.yaml")):
        try:
            rows.append(spec_row(path, iters))
        except Exception as exc:  # one spec's failure must not hide the others' numbers
            rows.append([path.name, *[""] * 6, f"error: {type(exc).__name__}: {str(exc)[:50]}"])
    print(
        f"spec library on CPU, B={B} T={T}, d_model={TINY_D} where allowed ({len(rows) - 1} specs):"
    )
    print(text_table(rows))
    t = pipeline_times(48, reps)
    print(
        f"48-layer GPT ({t['nodes']:.0f} IR nodes), median of {reps}: "
        f"spec -> graph {t['build'] * 1e3:.0f} ms; -O2 passes alone {t['passes'] * 1e3:.0f} ms; "
        f"build + passes {t['build+passes'] * 1e3:.0f} ms (target < 500 ms); "
        f"+ lowering to nn.Module {t['build+passes+lower'] * 1e3:.0f} ms"
    )
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
