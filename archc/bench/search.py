"""Search benchmarks: sampler regret curves on a synthetic space, and MQAR trials per hour.

Run: ``archc bench search [--quick]`` (or ``python -m archc.bench.search``).

1. Regret curves. A templated synthetic space (4 templates coded by 2 macro bits, 3
   ints in [0, 31] each, one global width choice) with a known optimum of 0 (template
   t3, x = (22, 9, 25), d_model = 64), so a study's best value is its regret. For each
   sampler (hhnas, tpe, random) and seed, an in-memory Optuna study of `budget` trials;
   the table gives the median (and interquartile range) over seeds of the best-so-far
   regret after 10, 20, 40, 60 trials, and each sampler's median regret at the full
   budget over random's. `--plot PATH` draws the medians with interquartile bands.
2. Trials per hour: `archc.search.study.run_study` with the hhnas sampler on
   specs/search-mqar.yaml (training objective `loss`), the whole call timed.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archc.bench.report import text_table
from archc.search.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
MQAR_SPEC = REPO / "specs" / "search-mqar.yaml"
SAMPLERS = ["hhnas", "tpe", "random"]
CHECKPOINTS = (10, 20, 40, 60)
# A trial of search-mqar.yaml as written (300 train steps) takes about 10 s on 2 CPU
# cores: short enough to time the space as written, so no overrides by default.
MQAR_OVERRIDES: tuple[str, ...] = ()

# A templated synthetic space: 4 templates (2 macro bits), 3 ints each, one global choice.
N_TEMPLATES = 4
SYNTHETIC_SPACE = "search:\n  d_model: {choice: [16, 32, 64, 128, 256]}\n  templates:\n" + "".join(
    f"    t{t}:\n" + "".join(f"      vars.x{i}: {{int: [0, 31]}}\n" for i in range(3))
    for t in range(N_TEMPLATES)
)
OFFSET = [0.6, 0.4, 0.2, 0.0]  # per-template floor: template t3 holds the optimum
CENTRE = [[5, 20, 11], [27, 3, 16], [14, 30, 8], [22, 9, 25]]  # per-template best x
OPTIMUM_VALUE = 0.0
OPTIMUM_PARAMS: dict[str, Any] = {
    "d_model": 64,
    "tmpl": "t3",
    **{f"tmpl=t3/vars.x{i}": CENTRE[3][i] for i in range(3)},
}


def parse_search(text: str) -> SearchSpace:
    """The SearchSpace of a YAML text holding a `search:` section."""
    from archc.diagnostics import Collector
    from archc.frontend.yaml import load_yaml
    from archc.search.space import parse_space

    data, locs = load_yaml(text, "<synthetic>")
    diags = Collector()
    space = parse_space(data["search"], locs, diags)
    if diags or space is None:
        raise ValueError(f"invalid search space: {diags}")
    return space


def synthetic_space() -> SearchSpace:
    """The parsed synthetic space (SYNTHETIC_SPACE)."""
    return parse_search(SYNTHETIC_SPACE)


def synthetic_objective(params: dict[str, Any]) -> float:
    """Known optimum 0 at template t3, x = CENTRE[3], d_model = 64 (> 0 elsewhere)."""
    t = int(params["tmpl"][1:])
    dist = sum(((params[f"tmpl=t{t}/vars.x{i}"] - CENTRE[t][i]) / 31) ** 2 for i in range(3))
    return OFFSET[t] + dist + 0.05 * (math.log2(params["d_model"]) - 6) ** 2


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def regret_curve(
    sampler: Any, budget: int, space: SearchSpace | None = None, first: dict | None = None
) -> np.ndarray:
    """Best-so-far regret after each of `budget` trials of an in-memory study, (budget,).

    `first`: parameters enqueued as the first trial (e.g. OPTIMUM_PARAMS).
    """
    import optuna

    _quiet()
    space = space or synthetic_space()
    study = optuna.create_study(sampler=sampler)
    if first is not None:
        study.enqueue_trial(first)
    study.optimize(lambda trial: synthetic_objective(space.sample(trial)), n_trials=budget)
    values = np.array([t.value for t in study.trials], dtype=float)
    return np.minimum.accumulate(values) - OPTIMUM_VALUE


def regret_curves(samplers: list[str], seeds: int, budget: int) -> dict[str, np.ndarray]:
    """sampler name -> best-so-far regret of seeds 0..seeds-1, (seeds, budget)."""
    from archc.search.hhnas import HHNASSampler, make_sampler

    space = synthetic_space()
    out = {}
    for name in samplers:
        rows = []
        for seed in range(seeds):
            sampler = make_sampler(name, seed)
            if isinstance(sampler, HHNASSampler):
                sampler.space = space  # all scopes' distributions at once (macro moves)
            rows.append(regret_curve(sampler, budget, space))
        out[name] = np.stack(rows)
    return out


def _quartiles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(25th, 50th, 75th) percentiles over seeds (axis 0)."""
    q = np.percentile(x, [25, 50, 75], axis=0)
    return q[0], q[1], q[2]


def regret_table(curves: dict[str, np.ndarray]) -> str:
    """Median regret [IQR] at the checkpoints that fit, and the ratio to random."""
    budget = next(iter(curves.values())).shape[1]
    marks = [c for c in CHECKPOINTS if c <= budget] or [budget]
    if marks[-1] != budget:
        marks.append(budget)
    rows = [["trials", *curves]]
    for m in marks:
        cells = [str(m)]
        for x in curves.values():
            lo, med, hi = (q[m - 1] for q in _quartiles(x))
            cells.append(f"{med:.4f} [{lo:.4f}, {hi:.4f}]")
        rows.append(cells)
    if "random" in curves:
        base = float(np.median(curves["random"][:, -1]))
        meds = [float(np.median(x[:, -1])) for x in curves.values()]
        ratios = [f"{m / base:.3f}" if base > 0 else "n/a" for m in meds]
        rows.append([f"/random@{budget}", *ratios])
    return text_table(rows)


def plot_regret(curves: dict[str, np.ndarray], path: Path) -> None:
    """PNG at `path`: median regret vs trials per sampler, interquartile band, log y."""
    from matplotlib.figure import Figure  # no pyplot: a file, no window, no global state

    seeds, budget = next(iter(curves.values())).shape
    trials = np.arange(1, budget + 1)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for name, x in curves.items():
        lo, med, hi = _quartiles(x)
        floor = 1e-6  # a log axis cannot show a regret of exactly 0
        (line,) = ax.plot(trials, np.maximum(med, floor), label=name)
        ax.fill_between(
            trials, np.maximum(lo, floor), np.maximum(hi, floor), color=line.get_color(), alpha=0.2
        )
    ax.set_yscale("log")
    ax.set_xlabel("trials")
    ax.set_ylabel("best-so-far regret (median, IQR band)")
    ax.set_title(f"Synthetic templated space: {seeds} seeds x {budget} trials")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def trials_per_hour(
    spec: Path, trials: int, overrides: Sequence[str] = MQAR_OVERRIDES
) -> tuple[float, int]:
    """(trials per hour, COMPLETE trials) of an hhnas `loss` study of `trials` trials on
    `spec`, timing the whole run_study call (sqlite storage in a temporary directory)."""
    from optuna.trial import TrialState

    from archc.search.study import run_study

    _quiet()
    with tempfile.TemporaryDirectory(prefix="archc-bench-search-") as tmp:
        t0 = time.perf_counter()
        study = run_study(
            spec,
            objective="loss",
            sampler="hhnas",
            n_trials=trials,
            storage=f"sqlite:///{Path(tmp) / 'study.db'}",
            study_name="bench",
            seed=0,
            overrides=list(overrides),
            run_root=Path(tmp) / "runs",
        )
        seconds = time.perf_counter() - t0
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return trials / seconds * 3600.0, complete


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5 seeds x 30 trials, 3 MQAR trials")
    ap.add_argument("--seeds", type=int, help="seeds per sampler (default 20; --quick 5)")
    ap.add_argument("--budget", type=int, help="trials per study (default 60; --quick 30)")
    ap.add_argument("--plot", type=Path, metavar="PATH", help="write a regret plot (PNG)")
    ap.add_argument("--no-train", action="store_true", help="skip the MQAR trials/hour run")
    args = ap.parse_args(argv)
    seeds = args.seeds or (5 if args.quick else 20)
    budget = args.budget or (30 if args.quick else 60)
    words = sys.argv[1:] if argv is None else argv
    print("command: " + shlex.join(["python", "-m", "archc.bench.search", *words]))

    curves = regret_curves(SAMPLERS, seeds, budget)
    print(f"best-so-far regret on the synthetic templated space (optimum 0), {seeds} seeds:")
    print("median [25th, 75th percentile]")
    print(regret_table(curves))
    if args.plot is not None:
        plot_regret(curves, args.plot)
        print(f"plot: {args.plot}")

    if not args.no_train:
        n = 3 if args.quick else 8
        rate, complete = trials_per_hour(MQAR_SPEC, n)
        shown = " ".join(MQAR_OVERRIDES) or "none"
        print(
            f"MQAR search ({MQAR_SPEC.relative_to(REPO)}, hhnas, objective loss, "
            f"overrides: {shown}): {rate:.0f} trials/hour ({n} trials, {complete} complete)"
        )


if __name__ == "__main__":
    main()
