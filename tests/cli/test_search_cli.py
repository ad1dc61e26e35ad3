"""`archc search`: a cost-objective study over specs/search-mqar.yaml (no training, so
it is fast), `best`, `freeze` (the frozen spec builds the trial's graph), and the user
errors that exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import archc
from archc.cli import run
from archc.ir.printer import structural_hash

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "search-mqar.yaml"


def test_search_best_and_freeze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "study"
    argv = ["search", str(SPEC), "--objective", "params,flops", "--trials", "5"]
    assert run([*argv, "--dir", str(study), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and (study / "study.db").is_file()
    assert run(["search", "best", str(study)]) == 0
    best = capsys.readouterr().out
    number, digest = re.search(r"#(\d+)\s+\[.*?hash (\w+)", best).groups()  # type: ignore[union-attr]
    frozen = tmp_path / "frozen.yaml"
    assert run(["search", "freeze", str(study), "--trial", number, "-o", str(frozen)]) == 0
    graph = archc.to_graph(frozen)
    assert structural_hash(graph) == digest
    assert "search:" not in frozen.read_text()  # a concrete spec
    # Running again continues the same study: 5 more evaluated trials.
    assert run([*argv, "--dir", str(study), "--seed", "2"]) == 0
    import optuna

    loaded = optuna.load_study(study_name="search-mqar", storage=f"sqlite:///{study}/study.db")
    done = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 10


def test_workers_share_a_capped_study_then_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two worker processes, a study-wide cap of 4, a measured-latency objective; then the
    plots of the Pareto study."""
    import optuna

    study = tmp_path / "study"
    argv = ["search", str(SPEC), "--objective", "params,latency", "--workers", "2"]
    assert run([*argv, "--max-trials", "4", "--dir", str(study), "--heartbeat", "1"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    loaded = optuna.load_study(study_name="search-mqar", storage=f"sqlite:///{study}/study.db")
    done = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4  # the cap holds across both workers
    for t in done:
        assert t.values[1] == t.user_attrs["latency_ms"] > 0 or "dedup_of" in t.user_attrs
    # Running again at the same cap adds nothing.
    assert (
        run([*argv[:2], "--objective", "params,latency", "--max-trials", "4", "--dir", str(study)])
        == 0
    )
    capsys.readouterr()
    assert (
        len(
            optuna.load_study(
                study_name="search-mqar", storage=f"sqlite:///{study}/study.db"
            ).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        )
        == 4
    )
    assert run(["search", "plot", str(study)]) == 0
    written = capsys.readouterr().out
    for name in ("history.png", "pareto.png"):
        path = study / "plots" / name
        assert f"wrote {path}" in written
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "best", "{tmp}/none"], "no study here"),
        (["search", "freeze", "{tmp}/none", "--trial", "0"], "no study here"),
        (["search", "{tmp}/missing.yaml"], "no such spec file"),
        (
            ["search", str(SPEC), "--storage", "sqlite:///{tmp}/no/such/dir/s.db", "--study", "s"],
            "cannot open the study storage",
        ),
        (["search", str(SPEC), "--trials", "0"], "--trials must be positive"),
        (["search", str(SPEC), "--max-trials", "-1"], "--max-trials must be positive"),
        (["search", "plot", "{tmp}/none"], "no study here"),
        (
            ["search", str(SPEC), "--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "cannot open the study storage",
        ),
    ],
)
def test_user_errors_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    messages: list[str] = []
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run(argv, handler=messages.append) == 2
    assert message in "\n".join(messages), messages
    assert "Traceback" not in "\n".join(messages)
