"""Train a spec from Python, reopen the run, evaluate it and sample from it.

python examples/02_train_a_spec.py [RUN_DIR]

The spec is a small short-conv + attention model on multi-query associative recall
(MQAR: key-value pairs, then queries whose answers are the keys' values). Chance
accuracy is about 1/32; 150 steps on a CPU (about 10 s) reach well above it. The same
run from the shell: `archc train SPEC --out RUN`, then `archc eval RUN`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import archc
from archc.runtime.generate import generate
from archc.runtime.session import evaluate_run, open_run

SPEC = """
model: example-mqar
vocab: 64
d_model: 64
define:
  block:
    - residual: [{norm: layer}, {conv1d: {kernel: 3, groups: depthwise}}]
    - residual: [{norm: layer}, {attention: {heads: 2, pos: rope}}]
    - residual: [{norm: layer}, {mlp: {mult: 2}}]
layers: [embed, block, block, {norm: layer}, head]
train:
  task: {name: mqar, vocab: 64, num_kv_pairs: 4}
  steps: 150
  batch_size: 16
  seq_len: 64
  lr: 3e-3
  warmup: 20
  eval_interval: 50
  log_interval: 50
"""


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "run"
    spec = archc.load(SPEC)
    summary = archc.train(spec, run_dir, show_progress=False)
    print(summary.line())  # the same line `archc train` prints at the end
    print("run files:", sorted(p.name for p in run_dir.iterdir()))

    # A run directory holds the spec, metrics and the checkpoint: reopen it anywhere.
    session = open_run(run_dir, device="cpu")
    metrics = evaluate_run(session, batches=4)
    print(f"reopened at step {session.step}: eval accuracy {metrics['accuracy']:.3f}")
    assert metrics["accuracy"] > 0.2, "MQAR should be learned well above chance (~0.03)"

    # Token-by-token generation reuses the model's state (KV cache, conv buffer).
    prompt = torch.tensor([1, 2, 3, 4])
    ids = generate(session.model, prompt, tokens=8, vocab=spec.vocab, top_k=5, seed=0)
    print("sampled ids:", ids)


if __name__ == "__main__":
    main()
