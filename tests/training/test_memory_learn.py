"""The neural-memory library specs learn: specs/titans-{mac,mag,mal}.yaml and
specs/atlas.yaml train 24 steps on MQAR with archc's trainer (shortened from the
specs' 60 to keep the suite fast) and their loss falls below an untrained model's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_helpers import spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train


@pytest.mark.parametrize(
    "name", ["titans-mac.yaml", "titans-mag.yaml", "titans-mal.yaml", "atlas.yaml"]
)
def test_memory_spec_learns(name: str, tmp_path: Path) -> None:
    spec = spec_with(
        name,
        "train.steps=24",
        "train.batch_size=16",
        "train.warmup=4",
        "train.log_interval=4",
        "train.eval_interval=24",
    )
    summary = train(spec, tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 5 and summary.loss < losses[0], (losses, summary.line())
    # Untrained: about ln(64) = 4.16 (uniform over the vocabulary); the trained model
    # must have learned at least the answers' distribution well below that.
    assert summary.eval["loss"] < math.log(64) - 0.4, summary.line()
