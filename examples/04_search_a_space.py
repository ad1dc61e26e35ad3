"""Search a space of specs with archc's HHNAS sampler, then freeze the best trial.

python examples/04_search_a_space.py [STUDY_DIR]

A spec's `search:` section turns it into a space: here the token mixer is attention,
GLA or an LSTM (`oneof`, each with its own choices), plus the width, under a parameter
budget checked before any training. Each trial trains the candidate briefly on MQAR;
the study (SQLite in STUDY_DIR) is a two-objective one: validation loss and parameters,
so the result is a Pareto front. The shell equivalent:
`archc search SPEC --objective loss,params --trials 6 --dir DIR`, `archc search best DIR`,
`archc search freeze DIR --trial N -o best.yaml`, `archc search plot DIR`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import optuna

import archc
from archc.search.study import freeze_trial, run_study

SPACE = """
model: example-search
vocab: 32
d_model: 32
define:
  mixer: [{attention: {heads: 2}}]
layers:
  - embed
  - residual: [{norm: rms}, mixer]
  - residual: [{norm: rms}, {mlp: {mult: 2}}]
  - norm: rms
  - head
train:
  task: {name: mqar, vocab: 32, num_kv_pairs: 2}
  steps: 30
  batch_size: 16
  seq_len: 24
  lr: 3e-3
  eval_interval: 0
  eval_batches: 1
search:
  d_model: {choice: [16, 32]}
  define.mixer:
    oneof:
      attention: [{attention: {heads: {choice: [1, 2]}}}]
      gla: [{gla: {heads: 2}}]
      lstm: [lstm]
  constraints: {max_params: 20000}
"""


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "space.yaml"
    spec_file.write_text(SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = run_study(
        spec_file,
        objective="loss,params",
        sampler="hhnas",
        n_trials=6,
        storage=f"sqlite:///{folder / 'study.db'}",
        study_name="example",
        seed=0,
    )
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print(f"{len(study.trials)} trials, Pareto front of {len(front)}:")
    for t in front:
        print(f"  #{t.number}: loss {t.values[0]:.3f}, {int(t.values[1]):,} parameters, {t.params}")
    # Freeze the front's smallest model into a concrete spec: it compiles and retrains.
    text = freeze_trial(study, front[0].number)
    frozen = folder / "best.yaml"
    frozen.write_text(text)
    model = archc.compile(frozen)
    print(f"froze #{front[0].number} into {frozen}: {sum(p.numel() for p in model.parameters()):,}")


if __name__ == "__main__":
    main()
