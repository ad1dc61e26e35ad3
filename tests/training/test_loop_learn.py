"""The looped-layer library specs learn with archc's trainer: specs/hrm.yaml (nested
loops with injection and the one-step gradient), specs/recurrent-depth.yaml (sampled
steps, concat injection, truncated backprop) and specs/relaxed-recursive.yaml (tied
loop with per-iteration LoRA) each train 40 steps on the copy task, and their loss falls
well below an untrained model's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_helpers import spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train


@pytest.mark.parametrize("name", ["hrm.yaml", "recurrent-depth.yaml", "relaxed-recursive.yaml"])
def test_loop_spec_learns(name: str, tmp_path: Path) -> None:
    summary = train(spec_with(name), tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 8 and summary.loss < losses[0], (losses, summary.line())
    # Untrained: about ln(10) = 2.30; knowing only that a target is one of the 8 data
    # symbols gives ln(8) = 2.08; copying must beat it clearly.
    assert summary.eval["loss"] < math.log(8) - 0.5, summary.line()
    if name == "hrm.yaml":  # ACT: the steps used and the Q-head loss are logged
        last = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r][-1]
        assert 1.0 <= last["layers.1.halt.steps"] <= 2.0 and "aux_loss" in last, last
        assert 0.0 <= last["layers.1.halt.q_halt_acc"] <= 1.0, last  # answer targets
