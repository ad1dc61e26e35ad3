"""Running searches: constraints before training, de-duplication, objectives, MQAR end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import archc
from archc.diagnostics import DiagnosticError
from archc.frontend.schema import Spec
from archc.search.study import freeze_trial, parse_objective, run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPECS = Path(__file__).resolve().parents[2] / "specs"

BASE = """\
model: s
vocab: 32
d_model: 16
layers:
  - embed
  - residual: [{norm: rms}, {attention: {heads: 2}}]
  - residual: [{norm: rms}, {mlp: {mult: 2}}]
  - norm: rms
  - head
train: {seq_len: 16, steps: 2}
"""


def _spec(tmp_path: Path, search: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(BASE + search)
    return p


def _numel(spec: Spec) -> int:
    """The oracle for model size: torch's own parameter count of the compiled model."""
    return sum(p.numel() for p in archc.compile(spec).parameters())


def test_budget_excludes_big_candidates_before_training(tmp_path: Path) -> None:
    widths = [16, 32, 64, 128]
    sizes = {w: _numel(archc.load(BASE, [f"d_model={w}"])) for w in widths}
    budget = (sizes[32] + sizes[64]) // 2  # 16 and 32 fit, 64 and 128 do not
    spec = _spec(
        tmp_path,
        "search:\n  d_model: {choice: [16, 32, 64, 128]}\n"
        f"  constraints: {{max_params: {budget}}}\n",
    )
    trained: list[int] = []

    def objective(s: Spec, trial: optuna.Trial) -> float:
        trained.append(s.d_model)
        return float(s.d_model)

    study = run_study(spec, objective, sampler="random", n_trials=6, seed=0)
    assert trained and set(trained) <= {16, 32}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # the budget counts evaluated trials only
    skipped = [t for t in study.trials if "infeasible" in t.user_attrs]
    assert skipped, "random draws over 4 widths must hit the two big ones"
    for t in skipped:
        assert t.state == TrialState.PRUNED
        assert t.params["d_model"] in (64, 128)
        assert "max_params" in t.user_attrs["infeasible"]


def test_candidates_that_do_not_build_are_infeasible(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "search:\n  layers[1].residual[1].attention.heads: {choice: [3, 4]}\n")
    heads: list[int] = []

    def objective(s: Spec, trial: optuna.Trial) -> float:
        heads.append(s.layers[1].body[1].params.heads)
        return 0.0

    study = run_study(spec, objective, sampler="random", n_trials=3, seed=0)
    assert heads == [4]  # trained once: the other two complete trials are copies of it
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 3
    bad = [t for t in study.trials if "infeasible" in t.user_attrs]
    assert bad and all(t.params["layers[1].residual[1].attention.heads"] == 3 for t in bad)
    assert "do not divide the width 16" in bad[0].user_attrs["infeasible"]


def test_a_constraint_nobody_meets_is_a_located_error(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, "search:\n  d_model: {choice: [16, 32]}\n  constraints: {max_params: 10}\n"
    )
    with pytest.raises(DiagnosticError) as info:
        run_study(spec, "params", sampler="random", n_trials=2, max_infeasible=8)
    (diag,) = info.value.diagnostics
    assert "no candidate satisfies" in diag.message and "8 draws" in diag.message
    assert diag.loc is not None and (diag.loc.line, diag.loc.col) == (13, 3)


def test_equal_graphs_reuse_the_first_result(tmp_path: Path) -> None:
    # `vars.tag` changes no graph and no training setting: only two distinct candidates.
    spec = _spec(
        tmp_path, "search:\n  d_model: {choice: [16, 32]}\n  vars.tag: {choice: [a, b, c]}\n"
    )
    calls: list[tuple[int, str]] = []

    def objective(s: Spec, trial: optuna.Trial) -> float:
        calls.append((s.d_model, s.vars["tag"]))
        return float(s.d_model) + 0.5 * len(calls)  # differs per call: copies are visible

    study = run_study(spec, objective, sampler="random", n_trials=10, seed=0)
    assert sorted(d for d, _ in calls) == [16, 32]  # one training per distinct graph
    by_number = {t.number: t for t in study.trials}
    dups = [t for t in study.trials if "dedup_of" in t.user_attrs]
    assert len(dups) == 8
    for t in dups:
        first = by_number[t.user_attrs["dedup_of"]]
        assert "dedup_of" not in first.user_attrs
        assert t.values == first.values
        assert t.params["d_model"] == first.params["d_model"]
        assert t.user_attrs["graph_hash"] == first.user_attrs["graph_hash"]


def test_cost_objectives_make_a_pareto_study(tmp_path: Path) -> None:
    assert parse_objective("loss, params") == ["loss", "params"]
    with pytest.raises(DiagnosticError, match="unknown objective"):
        parse_objective("loss,speed")
    spec = _spec(
        tmp_path,
        "search:\n  d_model: {choice: [16, 32]}\n  layers[2].residual[1].mlp.mult: {int: [1, 4]}\n",
    )
    study = run_study(spec, "params,flops", sampler="nsga2", n_trials=6, seed=0)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    t = study.trials[0]
    frozen = archc.load(freeze_trial(study, t.number))
    assert t.values[0] == _numel(frozen)
    # Matmul FLOPs per token grow with the MLP ratio at a fixed width.
    same_width = sorted(
        (x.params["layers[2].residual[1].mlp.mult"], x.values[1])
        for x in study.trials
        if x.params["d_model"] == t.params["d_model"]
    )
    for (m1, f1), (m2, f2) in itertools.pairwise(same_width):
        assert m1 == m2 or f2 > f1


MQAR = """\
model: mqar-tiny
vocab: 16
d_model: 16
layers:
  - embed
  - residual: [{norm: layer}, {conv1d: {kernel: 3, groups: depthwise}}]
  - residual: [{norm: layer}, {attention: {heads: 2, pos: rope}}]
  - norm: layer
  - head
train:
  task: {name: mqar, vocab: 16, num_kv_pairs: 2}
  seq_len: 16
search:
  d_model: {choice: [16, 32]}
  layers[2].residual[1].attention.heads: {choice: [1, 2]}
  train.lr: {float: [1e-3, 1e-2], log: true}
"""


def test_the_library_search_specs_sample_feasible_candidates() -> None:
    from archc.search.constraints import build_candidate, load_space
    from archc.search.space import representatives

    for name in ("search-mqar.yaml", "search-hybrid.yaml"):
        src = load_space(SPECS / name)
        for params in representatives(src.space):  # every template and alternative
            assert build_candidate(src, params).parameters > 0


def test_mqar_search_end_to_end_and_freeze_reproduces_the_best(tmp_path: Path) -> None:
    spec = tmp_path / "mqar-search.yaml"
    spec.write_text(MQAR)
    overrides = [
        "train.steps=2",
        "train.batch_size=4",
        "train.eval_interval=1",
        "train.eval_batches=1",
        "train.warmup=0",
        "train.checkpoint_interval=0",
    ]
    study = run_study(
        spec,
        "loss",
        sampler="hhnas",
        n_trials=3,
        seed=0,
        overrides=overrides,
        run_root=tmp_path / "runs",
        study_name="mqar",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
    )
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    best = study.best_trial
    trained = [t for t in done if "dedup_of" not in t.user_attrs]
    for t in trained:
        # The value is the run's final validation loss, as its summary file records it.
        summary = json.loads((tmp_path / "runs" / f"trial-{t.number}" / "summary.json").read_text())
        assert t.value == pytest.approx(summary["eval"]["loss"])
        assert sorted(t.intermediate_values) == [1, 2]  # every evaluation reached the pruner
    text = freeze_trial(study, best.number)
    frozen = tmp_path / "best.yaml"
    frozen.write_text(text)
    model = archc.compile(frozen)
    assert model.spec_hash == best.user_attrs["graph_hash"]
    assert model.spec.train.steps == 2  # the search's overrides are part of the trial
    assert model.spec.d_model == best.params["d_model"]
    # The study lives in the database: a fresh load sees the same best trial.
    again = optuna.load_study(study_name="mqar", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert again.best_trial.number == best.number
