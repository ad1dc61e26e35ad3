"""Every spec in the library trains: 30 steps on its own task lower the training loss.

Each YAML spec in specs/ trains with its `train:` section (or, without a task, on the
text corpus), shortened to 30 steps at a small batch with a per-step log; the mean loss
of the last 5 steps must be clearly below that of the first 3 (an untrained model's).
Parity is the exception: its loss stays at ln 2 until the task is solved, so parity
specs run their own (short) `train:` sections in full. This is the library's smoke test
of learning; the tests beside it check real results.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from training_helpers import CORPUS, REPO

from archc.api import load
from archc.runtime.progress import read_metrics
from archc.runtime.train import train

SPECS = sorted((REPO / "specs").glob("*.yaml"))
STEPS = 30


def _overrides(spec: Path) -> list[str]:
    base = load(spec)
    out = [
        "train.eval_interval=0",
        "train.eval_batches=1",
        "train.log_interval=1",
        "train.checkpoint_interval=0",
    ]
    if base.train.task is not None and base.train.task.name == "parity":
        return out
    out += [
        f"train.steps={STEPS}",
        "train.warmup=0",
        "train.schedule=constant",
        f"train.batch_size={min(base.train.batch_size, 16)}",
    ]
    if base.train.task is None:
        out += ["train.task=text", f"train.data={CORPUS}", "train.seq_len=32"]
    return out


def _losses(run: Path) -> list[float]:
    rows = read_metrics(run / "metrics.jsonl")
    return [r["loss"] for r in rows if r.get("split", "train") == "train" and "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_trains_with_falling_loss(spec: Path, tmp_path: Path) -> None:
    if load(spec).train.task is None and not CORPUS.is_file():
        pytest.skip(f"corpus not found at {CORPUS}")
    summary = train(load(spec, _overrides(spec)), tmp_path / "run", show_progress=False)
    losses = _losses(tmp_path / "run")
    assert len(losses) >= min(STEPS, summary.steps) - 1, summary.line()
    first, last = statistics.mean(losses[:3]), statistics.mean(losses[-5:])
    assert last < first - 0.05 * abs(first), (spec.name, first, last, losses)
