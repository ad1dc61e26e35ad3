"""specs/seq2seq-lstm.yaml learns sequence reversal: a small copy of it (shorter
sequences, fewer steps) trained with archc's trainer reaches a teacher-forced target
accuracy far above an untrained model's, which is near chance (1 / alphabet)."""

from __future__ import annotations

from pathlib import Path

from training_helpers import spec_with

from archc.runtime.train import train

SMALL = (
    "train.task={name: reverse, length: 5, alphabet: 8}",
    "train.seq_len=10",
    "layers[1].seq2seq.source=5",
    "layers[1].seq2seq.hidden=64",
    "train.batch_size=32",
    "train.eval_batches=4",
)


def test_seq2seq_learns_reversal(tmp_path: Path) -> None:
    untrained = train(
        spec_with("seq2seq-lstm.yaml", *SMALL, "train.steps=1", "train.lr=1e-9"),
        tmp_path / "untrained",
        show_progress=False,
    )
    trained = train(
        spec_with("seq2seq-lstm.yaml", *SMALL, "train.steps=150", "train.eval_interval=150"),
        tmp_path / "run",
        show_progress=False,
    )
    assert untrained.eval["accuracy"] < 0.3, untrained.line()
    assert trained.eval["accuracy"] > 0.8, trained.line()
