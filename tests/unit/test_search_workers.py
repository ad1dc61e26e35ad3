"""Several worker processes on one study: the study-wide cap, no trial lost or run twice,
a worker killed mid-trial (SIGKILL) re-queued by the others, and PostgreSQL storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

WORKER = Path(__file__).with_name("search_worker.py")
POSTGRES = os.environ.get("ARCHC_TEST_POSTGRES")


def _start(
    storage: str, study: str, log: Path, cap: int, seed: int, sleep_s: float
) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), storage, study, str(log), str(cap), str(seed), str(sleep_s)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _log(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(w, int(n), int(pid)) for w, n, pid in rows]


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


def _check(storage: str, study_name: str, log: Path, cap: int) -> optuna.Study:
    """Exactly `cap` trials evaluated, each by one worker, none started twice."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == cap
    rows = _log(log)
    starts = Counter(n for w, n, _ in rows if w == "start")
    ends = Counter(n for w, n, _ in rows if w == "end")
    assert all(c == 1 for c in starts.values()), starts  # no trial evaluated twice
    # Every complete trial was evaluated (or reused a complete twin's result), and
    # every finished evaluation was told to the study.
    for t in complete:
        assert ends[t.number] == 1 or "dedup_of" in t.user_attrs
        assert t.value == t.user_attrs["params"]
    assert set(ends) <= {t.number for t in complete}
    # Trials turned away at the cap were never evaluated.
    for t in trials:
        if t.user_attrs.get("over_cap"):
            assert t.state == TrialState.PRUNED and t.number not in starts
    return study


@pytest.mark.slow
def test_three_workers_share_a_study_and_survive_a_sigkill(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    log, cap = tmp_path / "log", 12
    # The first worker creates the study's tables before the others open them.
    first = _start(storage, "s", log, cap, 0, 0.4)
    deadline = time.monotonic() + 120
    while not any(w == "start" and pid == first.pid for w, _, pid in _log(log)):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    others = [_start(storage, "s", log, cap, seed, 0.4) for seed in (1, 2)]
    # Kill the first worker in the middle of a trial: started, not ended.
    while True:
        mine = [(w, n) for w, n, pid in _log(log) if pid == first.pid]
        if mine and mine[-1][0] == "start":
            os.kill(first.pid, signal.SIGKILL)
            killed = mine[-1][1]
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.wait()
    _wait(others)
    study = _check(storage, "s", log, cap)
    # The killed trial failed and its parameters were re-queued and evaluated by a survivor.
    dead = study.trials[killed]
    assert dead.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    survivors = {p.pid for p in others}
    assert {pid for w, n, pid in _log(log) if n == retries[0].number} <= survivors
    assert len({pid for _, _, pid in _log(log)} & survivors) == 2  # both did work


@pytest.mark.slow
@pytest.mark.skipif(
    POSTGRES is None and not os.environ.get("ARCHC_REQUIRE_POSTGRES"),
    reason="needs ARCHC_TEST_POSTGRES (a PostgreSQL URL; .ci/run starts a server)",
)
def test_two_workers_on_postgresql(tmp_path: Path) -> None:
    assert POSTGRES, "ARCHC_REQUIRE_POSTGRES is set but ARCHC_TEST_POSTGRES is not"
    name, log, cap = f"pg-{uuid.uuid4().hex[:8]}", tmp_path / "log", 6
    optuna.create_study(study_name=name, storage=POSTGRES)  # tables exist before the workers
    workers = [_start(POSTGRES, name, log, cap, seed, 0.2) for seed in (0, 1)]
    _wait(workers)
    _check(POSTGRES, name, log, cap)
    assert len({pid for _, _, pid in _log(log)}) == 2  # both workers evaluated trials
