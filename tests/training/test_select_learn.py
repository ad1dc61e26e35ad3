"""The select library specs learn with archc train: a CoLa layer-path program and a
SortedNet stack on copy (each short run's loss falls below its first logged loss and
well below what an untrained model reaches, about ln(vocab)), and landmark-style top-k
block retrieval recalls MQAR values it can only see through its retrieved blocks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_helpers import spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train

RUNS = {
    # spec: (overrides, the loss the run must get below)
    "cola-path.yaml": (
        ["train.steps=30", "train.warmup=5", "train.log_interval=5"],
        0.7 * math.log(64),
    ),
    "sortednet.yaml": (
        ["train.steps=30", "train.warmup=5", "train.log_interval=5"],
        0.7 * math.log(64),
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_select_spec_loss_falls(name: str, tmp_path: Path) -> None:
    overrides, below = RUNS[name]
    spec = spec_with(name, *overrides, "train.eval_interval=30", "train.checkpoint_interval=30")
    summary = train(spec, tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 5
    assert summary.loss < losses[0], (losses, summary.line())
    assert summary.loss < below, (losses, summary.line())


def test_landmark_retrieval_recalls_through_its_selected_blocks(tmp_path: Path) -> None:
    """MQAR's key-value pairs fill the first block; later queries are out of reach of
    their own block and the 4-token window, so recall (chance is about 1/31) needs each
    query to retrieve that block among its top 2."""
    spec = spec_with(
        "landmark-retrieval.yaml",
        "train.steps=150",
        "train.warmup=20",
        "train.log_interval=10",
        "train.eval_interval=150",
        "train.checkpoint_interval=150",
    )
    summary = train(spec, tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 10 and summary.loss < 0.5 * losses[0], (losses, summary.line())
    assert summary.eval["accuracy"] > 0.8, summary.line()
