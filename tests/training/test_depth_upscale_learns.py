"""Depth up-scaling trains through the switch: specs/depth-upscaled.yaml, shortened and
narrowed (d_model 32, the copy task, whose loss falls steadily), grows from 4 to 6
blocks mid-run; the loss right after the switch stays near where the
base model left it (the up-scaled stack starts from the base weights) and keeps falling
below it afterwards."""

from __future__ import annotations

import statistics
from pathlib import Path

from training_helpers import spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train

STEPS, SWITCH = 60, 30


def test_loss_keeps_falling_after_the_upscale(tmp_path: Path) -> None:
    spec = spec_with(
        "depth-upscaled.yaml",
        f"layers[1].repeat.upscale.at_step={SWITCH}",
        "d_model=32",
        "train.task={name: copy, length: 8, alphabet: 8}",
        f"train.steps={STEPS}",
        "train.batch_size=16",
        "train.seq_len=17",
        "train.warmup=10",
        "train.log_interval=1",
        "train.eval_interval=0",
        "train.eval_batches=1",
        "train.checkpoint_interval=0",
    )
    train(spec, tmp_path / "run", show_progress=False)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    loss = {r["step"]: r["loss"] for r in rows}
    depth = {r["step"]: r["layers.1.repeat.depth"] for r in rows}
    assert depth[SWITCH] == 4 and depth[SWITCH + 1] == 6  # step s logs forward s - 1
    first = statistics.mean(loss[s] for s in range(1, 4))
    before = statistics.mean(loss[s] for s in range(SWITCH - 4, SWITCH + 1))
    after = statistics.mean(loss[s] for s in range(SWITCH + 1, SWITCH + 6))
    last = statistics.mean(loss[s] for s in range(STEPS - 4, STEPS + 1))
    # Measured: first ~4.4, before ~2.2, after ~2.1, last ~1.8.
    assert before < first - 1.0, (first, before)  # the base model learned
    assert after < before + 0.2, (before, after)  # the up-scaled stack keeps what it learned
    assert last < after - 0.15, (first, before, after, last)  # and keeps learning
