"""Tests for archc.search.plots: files written, skipped plots, errors, name shortening."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection

from archc.diagnostics import DiagnosticError
from archc.search.plots import best_so_far, objective_names, short_param_names, write_plots

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    """`path` is a PNG that decodes to an image larger than 100x100."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100


def _optuna_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Messages of optuna's experimental-feature and importance-target warnings."""
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, optuna.exceptions.ExperimentalWarning)
        or "target" in str(w.message)
    ]


def _single_study() -> optuna.Study:
    """12 trials of a 2-parameter quadratic; the last one marked as a reused result."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def f(trial: optuna.Trial) -> float:
        x = trial.suggest_float("tmpl=a/x", -2.0, 2.0)
        n = trial.suggest_int("tmpl=a/layers[1].heads", 1, 8)
        if trial.number == 11:
            trial.set_user_attr("dedup_of", 3)
        return x**2 + (n - 3) ** 2

    study.optimize(f, n_trials=12)
    return study


def _multi_study() -> optuna.Study:
    """12 trials of a loss/params trade-off, named by the `objectives` user attr."""
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.set_user_attr("objectives", ["loss", "params"])

    def f(trial: optuna.Trial) -> tuple[float, float]:
        width = trial.suggest_int("d_model", 8, 512, log=True)
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return 1.0 / width + lr, float(width * width * 12)

    study.optimize(f, n_trials=12)
    return study


def test_single_objective_writes_history_and_importances(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_plots(_single_study(), tmp_path / "plots")
    assert [p.name for p in paths] == ["history.png", "importances.png"]
    assert not (tmp_path / "plots" / "pareto.png").exists()
    for p in paths:
        assert p.parent == tmp_path / "plots"
        _assert_png(p)
    assert not _optuna_warnings(caught)


def test_multi_objective_writes_pareto(tmp_path: Path) -> None:
    study = _multi_study()
    assert objective_names(study) == ["loss", "params"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_plots(study, tmp_path)
    assert [p.name for p in paths] == ["history.png", "pareto.png", "importances.png"]
    assert not _optuna_warnings(caught)
    for p in paths:
        _assert_png(p)


def test_importances_skipped_when_no_parameter_varies(tmp_path: Path) -> None:
    study = optuna.create_study()
    for _ in range(4):  # a real range, but every trial draws the same value
        study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) + t.number, n_trials=4)
    paths = write_plots(study, tmp_path)
    assert [p.name for p in paths] == ["history.png"]
    assert not (tmp_path / "importances.png").exists()


def test_importances_skipped_with_one_completed_trial(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    assert [p.name for p in write_plots(study, tmp_path)] == ["history.png"]


def test_no_completed_trials_is_an_error(tmp_path: Path) -> None:
    study = optuna.create_study()

    def pruned(trial: optuna.Trial) -> float:
        raise optuna.TrialPruned()

    study.optimize(pruned, n_trials=2)
    with pytest.raises(DiagnosticError, match="no completed trials"):
        write_plots(study, tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    with pytest.raises(DiagnosticError) as info:
        write_plots(study, tmp_path)
    diag = info.value.diagnostics[0]
    assert diag.message == "plots need matplotlib"
    assert diag.hint is not None and "archc[plots]" in diag.hint


def test_objective_names_fall_back_to_numbers() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    assert objective_names(study) == ["objective 0", "objective 1"]
    study.set_user_attr("objectives", ["loss"])  # wrong length: not trusted
    assert objective_names(study) == ["objective 0", "objective 1"]


def test_best_so_far_respects_direction() -> None:
    values = [3.0, 5.0, 1.0, 2.0]
    assert best_so_far(values, StudyDirection.MINIMIZE) == [3.0, 3.0, 1.0, 1.0]
    assert best_so_far(values, StudyDirection.MAXIMIZE) == [3.0, 5.0, 5.0, 5.0]


def test_short_param_names_unique() -> None:
    names = [
        "tmpl=a/layers[1].heads",
        "tmpl=b/layers[1].heads",
        "tmpl=a/d_ff",
        "lr",
        "tmpl",
    ]
    assert short_param_names(names) == {
        "tmpl=a/layers[1].heads": "tmpl=a/layers[1].heads",
        "tmpl=b/layers[1].heads": "tmpl=b/layers[1].heads",
        "tmpl=a/d_ff": "d_ff",
        "lr": "lr",
        "tmpl": "tmpl",
    }


def test_short_param_names_collision_with_unscoped_name() -> None:
    assert short_param_names(["heads", "tmpl=a/heads", "x/y/z"]) == {
        "heads": "heads",
        "tmpl=a/heads": "tmpl=a/heads",
        "x/y/z": "z",
    }
