"""The `train:` section: defaults, task forms, located errors, overrides, fmt round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archc.cli import run
from archc.diagnostics import DiagnosticError
from archc.frontend.resolve import load_spec
from archc.frontend.schema import Spec
from archc.frontend.tasks import DmsParams, MqarParams, ParityParams
from archc.frontend.train import Curriculum, TrainConfig

# Five lines of model, then `train:` on line 5: a train key written on the first line
# after it sits at line 6, column 3.
HEAD = """\
model: tc
vocab: 2
d_model: 8
layers: [embed, {lstm: {hidden: 8}}, {head: {out: 2}}]
"""

FULL = (
    HEAD
    + """\
train:
  task: {name: parity, n: 2}
  steps: 200
  batch_size: 8
  seq_len: 24
  lr: 1e-3
  betas: [0.8, 0.99]
  eps: 1e-6
  weight_decay: 0.05
  schedule: cosine
  warmup: 10
  min_lr_ratio: 0.2
  grad_clip: null
  grad_noise: {eta: 0.3, gamma: 0.7}
  curriculum: {param: n, start: 2, end: 4, mode: multi, advance_at: 0.95}
  seed: 7
  precision: float32
  device: cpu
"""
)


def write(tmp: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def load(tmp: Path, train: str | None, overrides: list[str] | None = None) -> Spec:
    """The spec HEAD plus `train:` followed by `train` (already indented), from a file."""
    text = HEAD if train is None else HEAD + "train:\n" + train
    return load_spec(write(tmp, text), overrides or [])


def diagnose(tmp: Path, train: str | None, overrides: list[str] | None = None) -> str:
    """The rendered diagnostics of a spec that must fail."""
    with pytest.raises(DiagnosticError) as err:
        load(tmp, train, overrides)
    return err.value.render()


def first_line(text: str) -> str:
    return text.splitlines()[0]


# --- defaults and task forms ----------------------------------------------------------------


def test_defaults_without_train_section(tmp_path: Path) -> None:
    spec = load(tmp_path, None)
    cfg = spec.train
    assert cfg == TrainConfig()
    assert cfg.task is None and cfg.curriculum is None and cfg.grad_noise is None
    assert (cfg.lr, cfg.betas, cfg.eps) == (3e-4, (0.9, 0.95), 1e-8)
    assert (cfg.steps, cfg.batch_size, cfg.seq_len, cfg.warmup) == (1000, 32, 128, 0)
    assert (cfg.schedule, cfg.min_lr_ratio, cfg.weight_decay) == ("cosine", 0.1, 0.1)
    assert cfg.grad_clip == 1.0 and cfg.optimizer == "adamw"
    assert not any(k.startswith("train") for k in spec.key_locs)


def test_task_shorthand_gets_default_params(tmp_path: Path) -> None:
    task = load(tmp_path, "  task: parity\n").train.task
    assert task is not None
    assert task.name == "parity"
    assert task.params == ParityParams(n=3)


def test_task_mapping_form(tmp_path: Path) -> None:
    task = load(tmp_path, "  task: {name: parity, n: 4}\n").train.task
    assert task is not None and task.name == "parity"
    assert isinstance(task.params, ParityParams) and task.params.n == 4
    mqar = load(tmp_path, "  task:\n    name: mqar\n    vocab: 32\n    num_kv_pairs: 3\n")
    assert mqar.train.task is not None
    assert mqar.train.task.params == MqarParams(vocab=32, num_kv_pairs=3)


def test_full_train_section_values(tmp_path: Path) -> None:
    cfg = load_spec(write(tmp_path, FULL)).train
    assert cfg.lr == 1e-3 and cfg.eps == 1e-6 and cfg.betas == (0.8, 0.99)
    assert cfg.grad_clip is None
    assert cfg.grad_noise is not None and (cfg.grad_noise.eta, cfg.grad_noise.gamma) == (0.3, 0.7)
    cur = cfg.curriculum
    assert cur is not None
    assert (cur.param, cur.start, cur.end, cur.step, cur.mode) == ("n", 2, 4, 1, "multi")
    assert cur.advance_at == 0.95 and cur.every is None


# --- located errors -----------------------------------------------------------------------


def test_unknown_train_key_is_located_with_did_you_mean(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  steps: 5\n  lrr: 1e-3\n")
    assert first_line(text) == f"{tmp_path / 's.yaml'}:7:3: error: unknown key 'lrr' in 'train'"
    assert "hint: did you mean 'lr'?" in text
    # The caret underlines the key.
    lines = text.splitlines()
    assert lines[1] == "    lrr: 1e-3" and lines[2] == "    ^~~"


def test_unknown_task_name_with_did_you_mean(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  task: parityy\n")
    assert first_line(text) == f"{tmp_path / 's.yaml'}:6:9: error: unknown task 'parityy'"
    assert "did you mean 'parity'?" in text
    text = diagnose(tmp_path, "  task: {name: dmss, n: 2}\n")
    assert first_line(text).startswith(f"{tmp_path / 's.yaml'}:6:16: error: unknown task 'dmss'")
    assert "did you mean 'dms'?" in text


def test_bad_task_param_is_located_at_its_value(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  task: {name: parity, n: 0}\n")
    assert first_line(text).startswith(f"{tmp_path / 's.yaml'}:6:27: error: n: ")
    assert "greater than or equal to 1" in text
    text = diagnose(tmp_path, "  seed: 1\n  task:\n    name: parity\n    n: 0\n")
    assert first_line(text).startswith(f"{tmp_path / 's.yaml'}:9:8: error: n: ")
    text = diagnose(tmp_path, "  task: {name: parity, m: 3}\n")
    assert first_line(text).endswith("error: unknown key 'm' in task 'parity'")
    assert ":6:24:" in first_line(text)


def test_task_of_wrong_shape(tmp_path: Path) -> None:
    for bad in ("[parity]", "{n: 3}", "3"):
        text = diagnose(tmp_path, f"  task: {bad}\n")
        assert ":6:9: error: 'task' must be a task name or a mapping" in first_line(text), text


def test_independent_errors_all_reported(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  lrr: 1\n  task: parityy\n  steps: 0\n")
    located = [line.split(": error")[0].rsplit(":", 2)[1:] for line in text.splitlines()]
    assert [pos for pos in located if len(pos) == 2] == [["6", "3"], ["7", "9"], ["8", "10"]]


# --- curriculum -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curriculum", "message"),
    [
        ("{param: n, start: 2, end: 4}", "set exactly one of 'advance_at'"),
        ("{param: n, start: 2, end: 4, every: 5, advance_at: 0.9}", "set exactly one of"),
        ("{param: n, start: 2, end: 5, step: 2, every: 5}", "2 + k * 2 never equals 5"),
        ("{param: n, start: 2, end: 5, step: -1, every: 5}", "step -1 never takes 2 to 5"),
        ("{param: n, start: 2, end: 5, step: 0, every: 5}", "step 0 never takes 2 to 5"),
        ("{param: n, start: 2, end: 4, every: 0}", "every: Input should be greater than 0"),
        ("{param: n, start: 2, end: 4, advance_at: 1.5}", "advance_at: Input should be less"),
        ("{param: n, start: 2, end: 4, every: 5, mode: many}", "mode: Input should be"),
    ],
)
def test_curriculum_validation(tmp_path: Path, curriculum: str, message: str) -> None:
    text = diagnose(tmp_path, f"  task: parity\n  curriculum: {curriculum}\n")
    assert ":7:" in first_line(text), text
    assert message in text, text


def test_curriculum_step_error_points_at_the_curriculum(tmp_path: Path) -> None:
    text = diagnose(
        tmp_path,
        "  task: parity\n  curriculum:\n    param: n\n    start: 2\n    end: 7\n    step: 2\n"
        "    every: 5\n",
    )
    assert "never equals 7" in text
    assert first_line(text).split(":")[1] == "7", text  # the `curriculum:` key
    assert "got {" not in text


def test_curriculum_param_must_be_an_int_param_of_the_task(tmp_path: Path) -> None:
    text = diagnose(
        tmp_path,
        "  task: parity\n  curriculum:\n    param: nn\n    start: 2\n    end: 4\n    every: 5\n",
    )
    assert first_line(text) == (
        f"{tmp_path / 's.yaml'}:8:12: error: task 'parity' has no integer parameter 'nn' "
        "to schedule"
    )
    assert "did you mean 'n'?" in text
    # A bool parameter is not an integer parameter, even though bool subclasses int.
    text = diagnose(
        tmp_path,
        "  task: mqar\n  curriculum: {param: random_non_queries, start: 0, end: 1, every: 5}\n",
    )
    assert "no integer parameter 'random_non_queries'" in text
    text = diagnose(tmp_path, "  curriculum: {param: n, start: 2, end: 4, every: 5}\n")
    assert "a curriculum needs a task" in text


def test_multi_head_curriculum_rejected_when_inputs_depend_on_param(tmp_path: Path) -> None:
    line = "  curriculum: {param: num_kv_pairs, start: 2, end: 4, every: 5, mode: multi}"
    text = diagnose(tmp_path, f"  task: mqar\n{line}\n")
    assert "cannot train 'num_kv_pairs' multi-head" in first_line(text)
    assert f":7:{line.index('multi') + 1}:" in first_line(text)  # at `multi`
    # The same curriculum single-head is fine, and so is multi-head parity.
    ok = load(
        tmp_path,
        "  task: mqar\n  curriculum: {param: num_kv_pairs, start: 2, end: 4, every: 5}\n",
    )
    assert ok.train.curriculum is not None and ok.train.curriculum.mode == "single"
    multi = load(
        tmp_path, "  task: dms\n  curriculum: {param: n, start: 1, end: 3, every: 5, mode: multi}\n"
    )
    assert multi.train.curriculum is not None and multi.train.curriculum.mode == "multi"


@pytest.mark.parametrize(
    ("start", "end", "step", "values"),
    [
        (2, 8, 2, [2, 4, 6, 8]),
        (1, 4, 1, [1, 2, 3, 4]),
        (5, 1, -2, [5, 3, 1]),
        (3, 3, 1, [3]),
        (3, 3, -1, [3]),
    ],
)
def test_curriculum_values(start: int, end: int, step: int, values: list[int]) -> None:
    cur = Curriculum(param="n", start=start, end=end, step=step, every=1)
    assert cur.values() == values


@pytest.mark.parametrize(
    "curriculum",
    [
        "{param: n, start: 0, end: 2, every: 5}",  # parity needs n >= 1
        "{param: n, start: 7, end: 9, every: 5}",  # n = 9 needs seq_len >= 9
    ],
)
def test_curriculum_values_are_valid_task_params(tmp_path: Path, curriculum: str) -> None:
    text = diagnose(tmp_path, f"  task: parity\n  seq_len: 8\n  curriculum: {curriculum}\n")
    assert ":8:" in first_line(text), text


# --- betas ----------------------------------------------------------------------------------


def test_betas_out_of_range_rejected(tmp_path: Path) -> None:
    for betas in ("[0.9, 1.0]", "[-0.1, 0.9]"):
        text = diagnose(tmp_path, f"  betas: {betas}\n")
        assert "each beta must lie in [0, 1)" in text, text
    text = diagnose(tmp_path, "  betas: [0.9, 0.9, 0.9]\n")
    assert first_line(text).startswith(f"{tmp_path / 's.yaml'}:6:10: error: betas:")
    assert load(tmp_path, "  betas: [0.0, 0.5]\n").train.betas == (0.0, 0.5)


def test_betas_error_points_at_betas(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  steps: 5\n  betas: [0.9, 1.0]\n")
    assert first_line(text).startswith(f"{tmp_path / 's.yaml'}:7:10: error: betas"), text
    assert "'steps'" not in text


# --- overrides ------------------------------------------------------------------------------


def test_train_overrides(tmp_path: Path) -> None:
    train = "  task: {name: parity, n: 4}\n  seq_len: 32\n"
    assert load(tmp_path, train, ["train.lr=1e-2"]).train.lr == 0.01
    mqar = load(tmp_path, train, ["train.task=mqar"]).train.task
    assert mqar is not None and mqar.name == "mqar" and mqar.params == MqarParams()
    task = load(tmp_path, train, ["train.task.n=5"]).train.task
    assert task is not None and task.params == ParityParams(n=5)
    dms = load(tmp_path, train, ["train.task={name: dms, n: 2}"]).train.task
    assert dms is not None and dms.params == DmsParams(n=2)
    assert load(tmp_path, train, ["train.betas=[0.5, 0.6]"]).train.betas == (0.5, 0.6)
    # Overrides create a train section where there is none.
    assert load(tmp_path, None, ["train.steps=7"]).train.steps == 7


def test_train_override_unknown_key_is_located_on_the_command_line(tmp_path: Path) -> None:
    text = diagnose(tmp_path, "  task: parity\n", ["train.lrr=1"])
    assert first_line(text) == "<override 1>:1:1: error: unknown key 'lrr' in 'train'"
    assert "did you mean 'lr'?" in text
    text = diagnose(tmp_path, "  task: parity\n", ["train.lr=1e-2", "train.task=parityy"])
    assert first_line(text).startswith("<override 2>:1:12: error: unknown task 'parityy'")


def test_task_param_override_on_task_shorthand(tmp_path: Path) -> None:
    task = load(tmp_path, "  task: parity\n", ["train.task.n=5"]).train.task
    assert task is not None and task.params == ParityParams(n=5)


def test_task_flag_keeps_explicit_task_param_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import archc.runtime.train as runtime_train

    seen: list[Spec] = []

    class Summary:
        def line(self) -> str:
            return "fake run"

    def fake_train(spec: Spec, *args: Any, **kwargs: Any) -> Summary:
        seen.append(spec)
        return Summary()

    monkeypatch.setattr(runtime_train, "train", fake_train)
    path = write(tmp_path, HEAD + "train:\n  task: {name: parity, n: 2}\n")
    args = ["train", str(path), "--task", "parity", "train.task.n=5", "--out", str(tmp_path)]
    assert run(args) == 0
    task = seen[0].train.task
    assert task is not None and task.params == ParityParams(n=5)


# --- key locations --------------------------------------------------------------------------


def test_key_locs(tmp_path: Path) -> None:
    spec = load(tmp_path, "  task: {name: parity, n: 4}\n  seq_len: 16\n")
    path = str(tmp_path / "s.yaml")
    locs = {k: (v.file, v.line, v.col) for k, v in spec.key_locs.items()}
    assert locs["vocab"] == (path, 2, 8)
    assert locs["train.task.n"] == (path, 6, 27)
    assert locs["train.seq_len"] == (path, 7, 12)
    over = load(tmp_path, "  task: {name: parity, n: 4}\n", ["train.seq_len=64"])
    assert over.key_locs["train.seq_len"].file == "<override 1>"
    defaulted = load(tmp_path, "  task: parity\n")
    assert "train.task.n" not in defaulted.key_locs and "train.seq_len" not in defaulted.key_locs


# --- fmt round trip and torch-free check ----------------------------------------------------


def test_fmt_round_trip_keeps_train_section(tmp_path: Path) -> None:
    src = write(tmp_path, FULL)
    dsl, back = tmp_path / "s.arch", tmp_path / "back.yaml"
    assert run(["fmt", str(src), "--to", "dsl", "-o", str(dsl)]) == 0
    assert run(["fmt", str(dsl), "--to", "yaml", "-o", str(back)]) == 0
    want: dict[str, Any] = load_spec(src).semantic_dump()
    assert want["train"]["curriculum"]["mode"] == "multi"  # the dump holds the train section
    assert load_spec(dsl).semantic_dump() == want
    assert load_spec(back).semantic_dump() == want


def test_check_with_train_section_does_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    code = (
        "import sys; from archc.cli import run; rc = run(['check', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert "ok (tc," in res.stdout
