"""Running a search over a spec's space on Optuna: objectives, pruning, de-duplication.

    study = run_study("specs/search-mqar.yaml", objective="loss,params", sampler="hhnas",
                      n_trials=20, storage="sqlite:///s.db", study_name="s", seed=0,
                      overrides=["train.steps=50"])
    print(freeze_trial(study, study.best_trials[0].number))

One trial: the sampler proposes parameters -> the concrete spec is built and checked
(constraints.build_candidate) -> an infeasible one is told PRUNED with user attr
`infeasible` and costs no training (and no budget: `n_trials` counts evaluated trials;
after `max_infeasible` infeasible draws in a row the study stops with a located error)
-> with a study-wide cap (`max_trials`), a slot is claimed (archc.search.workers) ->
a candidate whose de-dup key (IR hash + train settings) matches a complete trial's
reuses its values (user attr `dedup_of`) -> else the objective runs, with a heartbeat
recorded for the trial, so that a worker killed mid-trial has its trial failed and
re-queued by the others (archc.search.storage).

Objectives: a callable (spec, trial) -> value or values (give `directions`), or names
joined by commas: `loss` (min), `accuracy` (max) — the final validation metrics of an
archc training run — `params` (min), `flops` (min, forward FLOPs per token) from the
cost model, and `latency` (min, ms per forward batch measured on this machine,
archc.search.latency). Several names make a multi-objective (Pareto) study. Single-objective
training studies report every evaluation to the pruner (median by default).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import Trial, TrialState

from archc.diagnostics import DiagnosticError, error
from archc.frontend.schema import Spec
from archc.search.constraints import (
    Infeasible,
    SpaceSource,
    build_candidate,
    freeze,
    load_space,
)
from archc.search.hhnas import HHNASSampler, make_sampler
from archc.search.latency import forward_latency_ms
from archc.search.storage import HEARTBEAT_S, open_storage
from archc.search.workers import (
    INFEASIBLE,
    cap_reached,
    claim_slot,
    fail_stale,
    heartbeat,
    heartbeat_interval,
    holds_slot,
)

METRICS = {
    "loss": "minimize",
    "accuracy": "maximize",
    "params": "minimize",
    "flops": "minimize",
    "latency": "minimize",
}
TRAINED = ("loss", "accuracy")
Objective = Callable[[Spec, Trial], float | Sequence[float]]


def parse_objective(text: str) -> list[str]:
    """`"loss,params"` -> ["loss", "params"] (unknown names are errors)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in METRICS]
    if not names or bad:
        raise error(
            f"unknown objective '{','.join(bad) or text}'", hint=f"known: {', '.join(METRICS)}"
        )
    return names


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    """median | hyperband | none."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise error(f"unknown pruner '{name}'", hint="known: median, hyperband, none")


def train_metrics(
    spec: Spec, run_dir: Path, on_eval: Callable[[int, dict[str, float]], None] | None = None
) -> dict[str, float]:
    """Train `spec` into `run_dir`; the final validation metrics (loss, accuracy).

    `on_eval(step, metrics)` sees every evaluation (it may raise optuna.TrialPruned).
    """
    from archc.runtime import distributed as dist
    from archc.runtime.train import Trainer

    class _Observed(Trainer):
        def run_eval(self) -> dict[str, float]:
            metrics = super().run_eval()
            if on_eval is not None:
                on_eval(self.step, metrics)
            return metrics

    trainer = _Observed(spec, run_dir, False)
    try:
        return dict(trainer.run().eval)
    finally:
        dist.teardown(trainer.world)


def builtin_objective(names: list[str], run_root: str | Path | None, prune: bool) -> Objective:
    """The objective of metric `names` (see the module docstring)."""

    def objective(spec: Spec, trial: Trial) -> list[float]:
        metrics: dict[str, float] = {}
        if any(n in TRAINED for n in names):
            first = names[0]

            def on_eval(step: int, m: dict[str, float]) -> None:
                if prune and first in TRAINED:
                    trial.report(m[first], step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at step {step}")

            if run_root is None:
                with tempfile.TemporaryDirectory(prefix="archc-trial-") as tmp:
                    metrics = train_metrics(spec, Path(tmp), on_eval)
            else:
                metrics = train_metrics(spec, Path(run_root) / f"trial-{trial.number}", on_eval)
            trial.set_user_attr("eval", metrics)
        costs = {"params": trial.user_attrs["params"], "flops": trial.user_attrs["flops"]}
        if "latency" in names:
            costs["latency"] = forward_latency_ms(spec)
            trial.set_user_attr("latency_ms", costs["latency"])
        return [float(metrics[n]) if n in TRAINED else float(costs[n]) for n in names]

    return objective


def _find_duplicate(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("ir_key") == key:
            return t
    return None


def open_study(
    storage: str | optuna.storages.BaseStorage | None,
    study_name: str | None,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    heartbeat: int = HEARTBEAT_S,
) -> optuna.Study:
    """Create or load a study; a URL gets heartbeats and re-queued trials (storage.py)."""
    if isinstance(storage, str):
        storage = open_storage(storage, heartbeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=study_name,
            directions=list(directions),
            load_if_exists=True,
        )


class _Search:
    """One worker's loop over a study (see run_study)."""

    def __init__(
        self,
        study: optuna.Study,
        src: SpaceSource,
        fn: Objective,
        overrides: Sequence[str],
        max_trials: int | None,
        max_infeasible: int,
    ) -> None:
        self.study, self.src, self.fn, self.overrides = study, src, fn, overrides
        self.max_trials, self.max_infeasible = max_trials, max_infeasible
        self.infeasible_run = 0
        interval = heartbeat_interval(study._storage)
        self.poll_s = min(1.0, interval / 2) if interval else 1.0

    def run(self, n_trials: int | None) -> None:
        """Evaluate up to `n_trials` trials (None: until the study's cap is reached)."""
        done = 0
        while n_trials is None or done < n_trials:
            fail_stale(self.study)
            if cap_reached(self.study, self.max_trials):
                # Stay while other workers' claimed trials run: one whose worker dies is
                # re-queued and run here. (Unclaimed ones hold no slot: nothing to wait for.)
                running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not any(holds_slot(t) for t in running):
                    return
                time.sleep(self.poll_s)
                continue
            with warnings.catch_warnings():  # Optuna expects heartbeats from optimize() only
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = self.study.ask()
            with heartbeat(self.study._storage, trial._trial_id):
                done += self.one(trial)

    def one(self, trial: Trial) -> int:
        """Sample, check, claim a slot, evaluate and tell one trial; 1 if it was evaluated."""
        study = self.study
        params = self.src.space.sample(trial)
        try:
            cand = build_candidate(self.src, params, self.overrides)
        except Infeasible as exc:
            trial.set_user_attr(INFEASIBLE, str(exc))
            study.tell(trial, state=TrialState.PRUNED)
            self.infeasible_run += 1
            if self.infeasible_run >= self.max_infeasible:
                raise error(
                    f"no candidate satisfies the search space's constraints: "
                    f"{self.infeasible_run} draws in a row were infeasible (last: {exc})",
                    self.src.space.constraints_loc or self.src.space.loc,
                    hint="loosen the constraints or narrow the domains",
                ) from None
            return 0
        self.infeasible_run = 0
        for k, v in (
            ("ir_key", cand.key),
            ("graph_hash", cand.graph_hash),
            ("params", cand.parameters),
            ("flops", cand.flops_per_token),
        ):
            trial.set_user_attr(k, v)
        if self.max_trials is not None and not claim_slot(study, trial, self.max_trials):
            study.tell(trial, state=TrialState.PRUNED)
            return 0
        dup = _find_duplicate(study, cand.key)
        if dup is not None:
            trial.set_user_attr("dedup_of", dup.number)
            study.tell(trial, list(dup.values))
            return 1
        try:
            values = self.fn(cand.spec, trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return 1
        except DiagnosticError as exc:  # e.g. training diverged: the study goes on
            trial.set_user_attr("error", "; ".join(d.message for d in exc.diagnostics))
            study.tell(trial, state=TrialState.FAIL)
            return 1
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, values)
        return 1


def run_study(
    spec: str | Path | SpaceSource,
    objective: str | Objective = "loss",
    sampler: str | optuna.samplers.BaseSampler = "hhnas",
    n_trials: int | None = 20,
    *,
    max_trials: int | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
    overrides: Sequence[str] = (),
    directions: Sequence[str] | None = None,
    pruner: str | None = "auto",
    run_root: str | Path | None = None,
    max_infeasible: int = 50,
    heartbeat_s: int = HEARTBEAT_S,
    sampler_options: dict[str, Any] | None = None,
) -> optuna.Study:
    """Search `spec`'s space (see the module docstring): this worker evaluates up to
    `n_trials` trials, and the study as a whole at most `max_trials` (None: no cap;
    `n_trials=None` runs until the cap)."""
    if n_trials is None and max_trials is None:
        raise error("give a number of trials for this worker, a study-wide cap, or both")
    src = spec if isinstance(spec, SpaceSource) else load_space(spec)
    if isinstance(objective, str):
        names = parse_objective(objective)
        dirs = [METRICS[n] for n in names]
        if pruner == "auto":
            pruner = "median" if len(names) == 1 and names[0] in TRAINED else None
        fn = builtin_objective(names, run_root, prune=pruner not in (None, "none"))
    else:
        names, fn, dirs = [], objective, list(directions or ["minimize"])
        pruner = None if pruner == "auto" else pruner
    if len(dirs) > 1:
        pruner = None  # optuna prunes single-objective studies only
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, seed, **(sampler_options or {}))
    if isinstance(sampler, HHNASSampler) and sampler.space is None:
        sampler.space = src.space
    study = open_study(storage, study_name, dirs, sampler, make_pruner(pruner), heartbeat_s)
    where = Path(src.name)
    for key, value in (
        ("spec", str(where.resolve()) if where.is_file() else src.name),
        ("overrides", list(overrides)),
        ("objectives", names or [f"objective {i}" for i in range(len(dirs))]),
    ):
        study.set_user_attr(key, value)
    _Search(study, src, fn, overrides, max_trials, max_infeasible).run(n_trials)
    return study


def freeze_trial(study: optuna.Study, number: int, spec: str | Path | None = None) -> str:
    """The concrete spec text of trial `number` of a study run by `run_study`."""
    trial = study.trials[number]
    src = load_space(spec or study.user_attrs["spec"])
    return freeze(src, trial.params, study.user_attrs.get("overrides", ()))
