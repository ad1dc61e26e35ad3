"""The HHNAS sampler: helpers, mutation moves, shared policy state, and regret vs random."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.samplers import NSGAIISampler, RandomSampler, TPESampler

from archc.bench.search import synthetic_objective, synthetic_space
from archc.search.hhnas import (
    HHNASSampler,
    active,
    gene_group,
    make_sampler,
    scopes,
)
from archc.search.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _best(sampler: optuna.samplers.BaseSampler, space: SearchSpace, n: int) -> float:
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda trial: synthetic_objective(space.sample(trial)), n_trials=n)
    return study.best_value


def test_scope_helpers() -> None:
    name = "tmpl=a/layers[1]=gla/layers[1].gla.heads"
    assert scopes(name) == [("tmpl", "a"), ("tmpl=a/layers[1]", "gla")]
    assert gene_group(name) == "layers[1]"
    assert gene_group("tmpl=a/layers[1]") == "layers[1]"
    assert gene_group("define.mixer=attn/define.mixer[0].attention.heads") == "define.mixer"
    assert gene_group("d_model") == "d_model"
    params = {"tmpl": "a", "tmpl=a/x": 1, "tmpl=b/x": 2, "tmpl=a/m": "u", "tmpl=a/m=u/y": 3}
    params["tmpl=a/m=v/y"] = 4
    assert active(params) == {"tmpl": "a", "tmpl=a/x": 1, "tmpl=a/m": "u", "tmpl=a/m=u/y": 3}


def test_make_sampler_by_name() -> None:
    assert isinstance(make_sampler("hhnas", 0), HHNASSampler)
    assert isinstance(make_sampler("tpe", 0), TPESampler)
    assert isinstance(make_sampler("random", 0), RandomSampler)
    assert isinstance(make_sampler("nsga2", 0), NSGAIISampler)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("cmaes", 0)


def test_small_steps_stay_in_range_and_move() -> None:
    s = HHNASSampler(seed=0)
    d = IntDistribution(0, 31)
    for old in (0, 15, 31):
        for _ in range(20):
            new = s._step(d, old)
            assert 0 <= new <= 31 and new != old
    c = CategoricalDistribution([16, 32, 64, 128])
    assert all(s._step(c, 32) in (16, 64) for _ in range(20))  # ordered neighbours only


def test_macro_flips_bits_and_inherits_the_templates_best_genes() -> None:
    space = synthetic_space()
    s = HHNASSampler(seed=1, space=space)
    study = optuna.create_study(sampler=s)
    study.optimize(lambda trial: synthetic_objective(space.sample(trial)), n_trials=12)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    scores = [t.value for t in done]
    pol = {"q": [[0.0] * 4] * 3, "bit_p": [1.0, 0.0], "updates": 0}  # always flip bit 0
    for parent in done:
        code = int(parent.params["tmpl"][1:])
        child, flipped = s._macro(dict(parent.params), done, scores, space.distributions(), pol)
        new = f"t{code ^ 1}"  # bit 0 flipped: t0 <-> t1, t2 <-> t3
        assert flipped == [0] and child["tmpl"] == new
        assert child["d_model"] == parent.params["d_model"]  # global genes kept
        same = [t for t in done if t.params["tmpl"] == new]
        genes = {k: v for k, v in child.items() if k.startswith(f"tmpl={new}/")}
        if same:  # the new template's micro genes come from its best trial
            best = min(same, key=lambda t: t.value)
            assert genes == {k: v for k, v in best.params.items() if k.startswith(f"tmpl={new}/")}
        else:
            assert genes == {}  # left to fresh random draws
        assert not any(k.startswith(f"tmpl=t{code}/") for k in child)


def test_policy_is_stored_in_the_study_and_continued_by_another_worker(tmp_path: Path) -> None:
    space = synthetic_space()
    url = f"sqlite:///{tmp_path / 'study.db'}"

    def objective(trial: optuna.Trial) -> float:
        return synthetic_objective(space.sample(trial))

    first = HHNASSampler(seed=0, space=space, n_startup_trials=4)
    study = optuna.create_study(storage=url, study_name="s", sampler=first)
    study.optimize(objective, n_trials=14)
    stored = first.policy(study)
    assert stored["updates"] == 10  # one update per trial after the 4 random ones
    assert any(v != 0.0 for row in stored["q"] for v in row)
    assert len(stored["bit_p"]) == 2
    # Every mutated trial recorded its decision, its parent a complete earlier trial.
    for t in study.trials[4:]:
        assert t.system_attrs["hhnas:action"] in ("macro", "redraw", "step", "crossover")

    # A second sampler (another worker / a resumed run) reads the same policy back ...
    second = HHNASSampler(seed=1, space=space, n_startup_trials=4)
    again = optuna.load_study(storage=url, study_name="s", sampler=second)
    assert second.policy(again) == stored
    # ... and continues it rather than starting over.
    again.optimize(objective, n_trials=5)
    after = second.policy(again)
    assert after["updates"] == 15


def test_multi_objective_tournament_uses_pareto_rank() -> None:
    s = HHNASSampler(seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"])
    vals = [[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [5.0, 1.0]]
    # [3, 3] is dominated by [2, 2]: rank 1; the others are on the front.
    assert s._scores(study, vals) == [0.0, 0.0, 1.0, 0.0]
    assert s._reward(study, [3.0, 3.0], [2.0, 2.0], vals) == 1.0
    assert s._reward(study, [2.0, 2.0], [3.0, 3.0], vals) == -1.0
    assert s._reward(study, [1.0, 5.0], [5.0, 1.0], vals) == 0.0


def test_hhnas_beats_random_search_on_a_templated_space() -> None:
    """Median regret over 20 seeds at 40 trials (the optimum is 0, so regret = best)."""
    space = synthetic_space()
    budget, seeds = 40, range(20)
    hh, rnd = [], []
    for seed in seeds:
        hh.append(_best(HHNASSampler(seed=seed, space=space), space, budget))
        rnd.append(_best(RandomSampler(seed=seed), space, budget))
    med_hh, med_rnd = statistics.median(hh), statistics.median(rnd)
    assert med_hh < med_rnd, (med_hh, med_rnd)
    assert min(hh) >= 0 and min(rnd) >= 0  # the optimum really is 0


def test_random_params_match_optuna_sampling_domains() -> None:
    space = synthetic_space()
    dists = space.distributions()
    rng = np.random.RandomState(0)
    for _ in range(30):
        for k, v in space.random_params(rng).items():
            assert dists[k]._contains(dists[k].to_internal_repr(v))
