"""The segment-recurrence library specs learn: specs/rmt.yaml (memory tokens) and
specs/hmt.yaml (memory tokens + HMT recall) train 60 steps on MQAR with archc's
trainer, and their loss falls well below an untrained model's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_helpers import spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train


@pytest.mark.parametrize("name", ["rmt.yaml", "hmt.yaml"])
def test_segment_spec_learns(name: str, tmp_path: Path) -> None:
    summary = train(spec_with(name), tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 6 and summary.loss < losses[0], (losses, summary.line())
    # Untrained: about ln(64) = 4.16. Knowing only that an answer is one of the 32
    # value tokens gives ln(32) = 3.47; the trained model must beat both.
    assert summary.eval["loss"] < math.log(32), summary.line()
