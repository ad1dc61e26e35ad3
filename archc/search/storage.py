"""Study storages for `archc search`: heartbeats, re-queued trials, clear errors.

    storage = open_storage("sqlite:///runs/search-mqar/study.db")   # or postgresql://...

Every storage is an Optuna RDBStorage with heartbeats: a worker records a heartbeat
for its running trial every `heartbeat` seconds (archc.search.workers.heartbeat), and
any worker that finds a running trial silent for `grace` seconds marks it FAIL and
re-queues its parameters as a WAITING trial (Optuna's RetryHeartbeatStaleTrialCallback,
up to `max_retry` times), which the next worker to ask takes. So a worker killed
mid-trial costs that trial's time, not the study.

SQLite (the default, one file in the study directory) serialises writers with file
locks; the busy timeout is raised so several local workers wait rather than fail.
"""

from __future__ import annotations

import warnings

import optuna

from archc.diagnostics import error

HEARTBEAT_S = 10
GRACE_S = 30
MAX_RETRY = 2


def open_storage(
    url: str, heartbeat: int = HEARTBEAT_S, grace: int | None = None, max_retry: int = MAX_RETRY
) -> optuna.storages.RDBStorage:
    """An RDBStorage at `url` with heartbeats every `heartbeat` s, stale after `grace` s
    (default 3 heartbeats); an unreachable server, bad URL or missing driver is a user
    error (exit 2), not a traceback."""
    if heartbeat <= 0:
        raise error(f"the heartbeat interval must be positive, got {heartbeat}")
    engine: dict[str, object] = {}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 120}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=grace or 3 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry
                ),
            )
    except Exception as exc:
        raise error(f"cannot open the study storage {url!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
