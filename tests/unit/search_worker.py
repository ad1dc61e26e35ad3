"""A search worker for the multi-worker tests: `python search_worker.py STORAGE STUDY LOG
MAX_TRIALS SEED [SLEEP_S]`.

Runs archc's study loop on specs/search-mqar.yaml with a cheap objective (the candidate's
parameter count) that takes SLEEP_S seconds and logs `start N PID` / `end N PID` lines
to LOG (one write per line, appended), so the test sees which worker evaluated which
trial and can kill one mid-trial.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import optuna

from archc.frontend.schema import Spec
from archc.search.study import run_study

SPEC = Path(__file__).resolve().parents[2] / "specs" / "search-mqar.yaml"


def main() -> None:
    storage, study, log, cap, seed = sys.argv[1:6]
    sleep_s = float(sys.argv[6]) if len(sys.argv) > 6 else 0.3
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def note(word: str, number: int) -> None:
        with open(log, "a") as f:
            f.write(f"{word} {number} {os.getpid()}\n")

    def objective(spec: Spec, trial: optuna.Trial) -> float:
        note("start", trial.number)
        time.sleep(sleep_s)
        note("end", trial.number)
        return float(trial.user_attrs["params"])

    run_study(
        SPEC,
        objective=objective,
        sampler="random",
        n_trials=None,
        max_trials=int(cap),
        storage=storage,
        study_name=study,
        seed=int(seed),
        heartbeat_s=1,
    )


if __name__ == "__main__":
    main()
