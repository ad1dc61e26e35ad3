"""Checkpoint/resume: interrupted + resumed runs compute the losses of uninterrupted ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import REPO, spec_with

from archc.diagnostics import DiagnosticError
from archc.runtime import checkpoint as ckpt
from archc.runtime.progress import read_metrics
from archc.runtime.train import Trainer, train

# Dropout and gradient noise make the run depend on both RNG streams a checkpoint saves.
TINY = (
    "d_model=16",
    "layers=[embed, {lstm: {hidden: 16}}, {dropout: 0.1}, head]",
    "vocab=64",
    "train.task={name: mqar, vocab: 64, num_kv_pairs: 2}",
    "train.seq_len=16",
    "train.batch_size=8",
    "train.steps=12",
    "train.log_interval=1",
    "train.eval_interval=4",
    "train.checkpoint_interval=5",
    "train.warmup=3",
    "train.grad_noise={eta: 0.01}",
)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


class Crash(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_with("lstm.yaml", *TINY)
    train(spec, tmp_path / "whole", show_progress=False)

    real_step = Trainer.train_step

    def crash_after_7(self: Trainer) -> tuple[float, float]:
        if self.step == 7:  # two steps past the step-5 checkpoint: their rows are redone
            raise Crash
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_7)
    with pytest.raises(Crash):
        train(spec, tmp_path / "cut", show_progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert ckpt.load(tmp_path / "cut" / ckpt.CHECKPOINT)["step"] == 5
    summary = train(spec, tmp_path / "cut", resume=True, show_progress=False)
    assert summary.resumed_from == 5
    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(cut) == list(range(1, 13))  # one row per step, none duplicated
    assert cut == whole  # bit-exact on CPU
    assert summary.eval == json.loads((tmp_path / "whole" / "summary.json").read_text())["eval"]


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    spec = spec_with("lstm.yaml", *TINY, "train.steps=2")
    train(spec, tmp_path / "run", show_progress=False)
    with pytest.raises(DiagnosticError, match="already holds a run"):
        train(spec, tmp_path / "run", show_progress=False)


def test_resume_with_a_different_model_is_refused(tmp_path: Path) -> None:
    train(spec_with("lstm.yaml", *TINY, "train.steps=2"), tmp_path / "run", show_progress=False)
    other = spec_with("lstm.yaml", *TINY, "train.steps=4", "layers[1].lstm.hidden=24")
    with pytest.raises(DiagnosticError, match="different model"):
        train(other, tmp_path / "run", resume=True, show_progress=False)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "archc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


SLOW = [a for a in TINY if not a.startswith(("train.steps", "train.checkpoint"))] + [
    "train.steps=1500",
    "train.checkpoint_interval=100",
    "train.eval_interval=500",
]


def test_sigkill_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "killed"
    proc = _cli("train", "specs/lstm.yaml", *SLOW, "--out", str(run), "-q")
    deadline = time.monotonic() + 120
    while not (run / ckpt.CHECKPOINT).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.load(run / ckpt.CHECKPOINT)["step"]
    assert killed_at < 1500, "the run finished before it could be killed"
    assert not (run / "summary.json").exists()

    resumed = _cli("train", "specs/lstm.yaml", *SLOW, "--out", str(run), "--resume", "-q")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    whole = _cli("train", "specs/lstm.yaml", *SLOW, "--out", str(tmp_path / "whole"), "-q")
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    assert losses(run) == losses(tmp_path / "whole")


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    proc = _cli(
        "train", "specs/lstm.yaml", *TINY, "--out", str(run), env={"ARCHC_INJECT_NAN_AT": "7"}
    )
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert "training diverged: the loss is nan at step 7" in err
    assert "the last good checkpoint (step 5) is kept" in err
    state = ckpt.load(run / ckpt.CHECKPOINT)
    assert state["step"] == 5
    assert all(v == v for v in losses(run).values())  # no NaN row was logged
    assert max(losses(run)) == 7  # rows up to the last finite step


def test_crash_while_checkpointing_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_with("lstm.yaml", *TINY)
    real_save = ckpt.torch.save
    calls = {"n": 0}

    def torn_save(obj: object, fh: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the step-10 checkpoint: half written, then the process "dies"
            fh.write(b"PK\x03\x04 torn")  # type: ignore[attr-defined]
            raise Crash
        real_save(obj, fh)

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(Crash):
        train(spec, tmp_path / "run", show_progress=False)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load(tmp_path / "run" / ckpt.CHECKPOINT)["step"] == 5
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == []
    summary = train(spec, tmp_path / "run", resume=True, show_progress=False)
    assert summary.steps == 12
