"""Many workers on one study: heartbeats and a study-wide trial cap.

Heartbeat: `with heartbeat(storage, trial_id):` records a heartbeat now and then every
interval from a thread, so that other workers see the trial alive (archc.search.storage
explains what happens to a silent one).

The cap (`max_trials`: evaluated trials in the whole study, whichever worker runs them)
is kept without a lock, by an order every worker agrees on: trial numbers. A worker
whose candidate is feasible marks its trial with the user attr `claim`, then counts the
claimed trials numbered below its own; it evaluates only if fewer than the cap hold a
slot, and otherwise tells its trial PRUNED with user attr `over_cap` and stops. Trials
below it whose feasibility is not yet known (asked a moment ago) are waited for, so two
workers never both take the last slot. A slot is held by a claimed trial that is
running, complete, pruned by the pruner, failed with an `error` (training diverged:
evaluated), or waiting as the re-queued copy of a killed one (it inherits the claim);
a killed trial itself (FAIL without `error`) frees its slot for its copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from archc.search.storage import GRACE_S

CLAIM, OVER_CAP, INFEASIBLE = "claim", "over_cap", "infeasible"
HOLDS = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record heartbeats for `trial_id` while the block runs (no-op without heartbeats)."""
    interval = heartbeat_interval(storage)
    if not interval:
        yield
        return
    storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a busy database: the next beat tries again
                pass

    thread = threading.Thread(target=beat, name=f"archc-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats, None when the storage keeps none."""
    getter = getattr(storage, "get_heartbeat_interval", None)  # RDBStorage and its cache
    return getter() if getter is not None else None


def fail_stale(study: optuna.Study) -> None:
    """Fail (and re-queue) trials whose workers stopped beating."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def holds_slot(t: FrozenTrial) -> bool:
    """Whether trial `t` counts against the study-wide cap (see the module docstring)."""
    attrs = t.user_attrs
    if not attrs.get(CLAIM) or attrs.get(OVER_CAP):
        return False
    if t.state == TrialState.FAIL:
        return "error" in attrs
    return t.state in HOLDS


def _decided(t: FrozenTrial) -> bool:
    return t.state != TrialState.RUNNING or CLAIM in t.user_attrs or INFEASIBLE in t.user_attrs


def claim_slot(study: optuna.Study, trial: optuna.Trial, cap: int, wait_s: float = GRACE_S) -> bool:
    """Claim one of `cap` study-wide slots for `trial` (feasible, about to be evaluated).

    False when the cap is reached: the caller tells the trial PRUNED and stops.
    """
    trial.set_user_attr(CLAIM, True)
    deadline = time.monotonic() + 2 * wait_s
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        pending = [t for t in earlier if not _decided(t)]
        # A worker killed between asking and deciding leaves its trial undecided until
        # the heartbeat marks it failed; past the deadline it is taken as holding nothing.
        if not pending or time.monotonic() > deadline:
            taken = sum(holds_slot(t) for t in earlier)
            if taken < cap:
                return True
            trial.set_user_attr(OVER_CAP, True)
            return False
        fail_stale(study)
        time.sleep(0.05)


def cap_reached(study: optuna.Study, cap: int | None) -> bool:
    """True when `cap` slots are held and no re-queued trial waits to be run."""
    if cap is None:
        return False
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return not waiting and sum(map(holds_slot, study.get_trials(deepcopy=False))) >= cap
