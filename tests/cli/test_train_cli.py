"""`archc train / eval / generate` from the command line: results, and every user mistake
as a located error with exit status 2 and no traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from archc.cli import run

REPO = Path(__file__).resolve().parents[2]
LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: ", re.M)

TEXT_SPEC = """\
model: bytes
vocab: 256
d_model: 16
layers:
  - embed
  - lstm: {hidden: 16}
  - head
train:
  task: text
  data: corpus.txt
  steps: 3
  seq_len: 16
  batch_size: 4
"""


def _run(argv: list[str]) -> tuple[int, str]:
    messages: list[str] = []
    code = run(argv, handler=messages.append)
    return code, "\n".join(messages)


@pytest.fixture
def text_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("to be or not to be, that is the question. " * 40)
    path = tmp_path / "bytes.yaml"
    path.write_text(TEXT_SPEC)
    return path


def _error_at(text: str, file: str, line: int) -> None:
    m = LOCATED.search(text)
    assert m, text
    assert m["file"].endswith(file) and int(m["line"]) == line, text
    assert "Traceback" not in text


def test_train_eval_generate_text(text_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", str(text_spec), "--out", "run", "-q"])
    assert code == 0, err
    line = capsys.readouterr().out
    assert line.startswith("bytes: 3 steps") and "bits/byte" in line and "-> run" in line
    assert {"spec.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= {
        p.name for p in Path("run").iterdir()
    }
    code, err = _run(["eval", "run", "--json"])
    assert code == 0, err
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["step"] == 3 and metrics["bpb"] == pytest.approx(
        metrics["loss"] / 0.6931471805599453
    )
    code, err = _run(["generate", "run", "--prompt", "to be", "--tokens", "7", "--seed", "1"])
    assert code == 0, err
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out.rstrip("\n").encode("utf-8", "replace")) >= 5


def test_run_dir_spec_is_resolved_and_self_contained(text_spec: Path, tmp_path: Path) -> None:
    code, err = _run(["train", str(text_spec), "--out", "run", "-q", "train.steps=2", "d_model=24"])
    assert code == 0, err
    saved = (tmp_path / "run" / "spec.yaml").read_text()
    assert "d_model: 24" in saved and str(tmp_path / "corpus.txt") in saved
    code, err = _run(["check", str(tmp_path / "run" / "spec.yaml")])
    assert code == 0, err


@pytest.mark.parametrize(
    ("edit", "args", "file", "line", "needle"),
    [
        # a missing data file: at the spec's train.data line
        (("data: corpus.txt", "data: nowhere.txt"), [], "bytes.yaml", 10, "does not exist"),
        # an unknown task: at the task line, with a suggestion
        (("task: text", "task: txet"), [], "bytes.yaml", 9, "unknown task 'txet'"),
        # a sequence longer than the data
        (("seq_len: 16", "seq_len: 5000"), [], "bytes.yaml", 12, "seq_len"),
        # an unknown override key: at the override itself
        (None, ["train.sequence=4"], "<override 1>", 1, "unknown key 'sequence'"),
    ],
)
def test_user_mistakes_are_located(
    text_spec: Path,
    edit: tuple[str, str] | None,
    args: list[str],
    file: str,
    line: int,
    needle: str,
) -> None:
    if edit is not None:
        text_spec.write_text(TEXT_SPEC.replace(*edit))
    code, err = _run(["train", str(text_spec), "--out", "run", "-q", *args])
    assert code == 2, err
    assert needle in err, err
    _error_at(err, file, line)


def test_empty_data_file(text_spec: Path, tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("")
    code, err = _run(["train", str(text_spec), "--out", "run", "-q"])
    assert code == 2 and "empty" in err, err
    _error_at(err, "bytes.yaml", 10)


def test_data_flag_is_relative_to_the_working_directory(text_spec: Path, tmp_path: Path) -> None:
    code, err = _run(["train", str(text_spec), "--data", "missing.txt", "--out", "run", "-q"])
    assert code == 2 and str(tmp_path / "missing.txt") in err, err
    assert "Traceback" not in err


def test_unknown_task_flag(text_spec: Path) -> None:
    code, err = _run(["train", str(text_spec), "--task", "parrity", "--out", "run", "-q"])
    assert code == 2 and "unknown task 'parrity'" in err and "did you mean 'parity'" in err, err


def test_no_task_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(["train", str(REPO / "specs" / "gpt.yaml"), "--out", "run", "-q"])
    assert code == 2 and "has no task" in err and "--task" in err, err


def test_model_too_small_for_task(text_spec: Path) -> None:
    task = "train.task={name: mqar, vocab: 512}"
    code, err = _run(["train", str(text_spec), task, "train.seq_len=64", "--out", "run", "-q"])
    assert code == 2 and "vocab" in err, err
    _error_at(err, "bytes.yaml", 2)


def test_eval_and_generate_need_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (["eval", "nope"], ["generate", "nope", "--prompt", "x"]):
        code, err = _run(argv)
        assert code == 2 and "no run directory" in err, err


def test_eval_data_scores_every_byte_of_the_file(
    text_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    import torch.nn.functional as F

    from archc.runtime.session import open_run

    assert _run(["train", str(text_spec), "--out", "run", "-q"])[0] == 0
    other = tmp_path / "other.txt"
    other.write_bytes(bytes(range(40, 89)))  # 49 bytes = 3 windows of 16 (+1)
    capsys.readouterr()
    code, err = _run(["eval", "run", "--data", str(other), "--json"])
    assert code == 0, err
    got = json.loads(capsys.readouterr().out)
    # Oracle: the three non-overlapping windows by hand.
    model = open_run(tmp_path / "run", device="cpu").model
    data = torch.tensor(list(other.read_bytes()))
    with torch.no_grad():
        x = data[:48].view(3, 16)
        y = data[1:49].view(3, 16)
        want = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1)).item()
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    code, err = _run(["eval", "run", "--data", str(tmp_path / "nope.txt")])
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "short.txt").write_text("tiny")
    code, err = _run(["eval", "run", "--data", str(tmp_path / "short.txt")])
    assert code == 2 and "fewer than one window" in err, err
