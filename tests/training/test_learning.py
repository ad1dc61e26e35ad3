"""Models learn, not just run: each test asserts a result an untrained model cannot reach."""

from __future__ import annotations

import collections
import math
from pathlib import Path

import pytest
from training_helpers import CORPUS, spec_with

from archc.runtime.progress import read_metrics
from archc.runtime.train import train


def test_attention_learns_mqar(tmp_path: Path) -> None:
    """Chance accuracy on MQAR is about 1/32 (values are half the vocabulary)."""
    summary = train(spec_with("mqar-attention.yaml"), tmp_path / "run", show_progress=False)
    assert summary.eval["accuracy"] >= 0.9, summary.line()


def test_lstm_learns_parity(tmp_path: Path) -> None:
    """3-parity is at chance (0.5) for anything that does not integrate over time."""
    summary = train(spec_with("parity-lstm.yaml"), tmp_path / "run", show_progress=False)
    assert summary.eval["accuracy"] >= 0.99, summary.line()


def unigram_bits(path: Path, val_fraction: float) -> float:
    """Entropy (bits/byte) of the byte distribution of the training part: the best an
    untrained-in-context model (one that ignores history) can reach."""
    data = path.read_bytes()
    part = data[: len(data) - round(len(data) * val_fraction)]
    counts = collections.Counter(part)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@pytest.mark.skipif(not CORPUS.is_file(), reason=f"corpus not found at {CORPUS}")
def test_lstm_text_beats_unigram_entropy(tmp_path: Path) -> None:
    corpus = CORPUS
    spec = spec_with(
        "lstm.yaml",
        "d_model=64",
        "layers[1].lstm.hidden=128",
        "layers[1].lstm.layers=1",
        "train.task=text",
        f"train.data={corpus}",
        "train.steps=250",
        "train.seq_len=64",
        "train.batch_size=16",
        "train.lr=1e-2",
        "train.eval_batches=8",
    )
    summary = train(spec, tmp_path / "run", show_progress=False)
    floor = unigram_bits(corpus, 0.1)  # about 4.77 bits/byte on tinyshakespeare
    assert summary.eval["bpb"] < floor - 1.0, (summary.line(), floor)


def test_multi_head_curriculum_reaches_the_last_level(tmp_path: Path) -> None:
    """One head per n in 2..4; n moves on when every head reached so far is >= 95%."""
    spec = spec_with(
        "parity-lstm.yaml",
        "layers[2].head.out=6",
        "train.task.n=2",
        "train.curriculum={param: n, start: 2, end: 4, mode: multi, advance_at: 0.95}",
        "train.steps=300",
        "train.eval_interval=50",
        "train.schedule=constant",
    )
    summary = train(spec, tmp_path / "run", show_progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["level"] for r in rows if "level" in r] == [3, 4]
    for n in (2, 3, 4):
        assert summary.eval[f"accuracy_n{n}"] >= 0.95, summary.eval
