"""Training, eval and generation on CUDA (bf16 autocast); skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archc
from archc.runtime.generate import generate
from archc.runtime.session import evaluate_run, open_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_mqar_learns_on_cuda_in_bf16(tmp_path: Path) -> None:
    spec = archc.load(SPECS / "mqar-attention.yaml", ["train.device=cuda"])
    summary = archc.train(spec, tmp_path / "run", show_progress=False)
    assert summary.eval["accuracy"] >= 0.9, summary.line()
    session = open_run(tmp_path / "run", device="cuda")
    assert session.device.type == "cuda"
    assert evaluate_run(session, batches=2)["accuracy"] >= 0.85
    out = generate(session.model, torch.tensor([3, 40, 5, 41]), 8, vocab=64, temperature=0)
    assert len(out) == 8 and all(0 <= t < 64 for t in out)


def test_resume_on_cuda_continues(tmp_path: Path) -> None:
    args = ["train.device=cuda", "train.steps=20", "train.checkpoint_interval=10"]
    spec = archc.load(SPECS / "parity-lstm.yaml", args)
    archc.train(spec, tmp_path / "run", show_progress=False)
    longer = archc.load(SPECS / "parity-lstm.yaml", [*args[:1], "train.steps=30"])
    summary = archc.train(longer, tmp_path / "run", resume=True, show_progress=False)
    assert summary.resumed_from == 20 and summary.steps == 30
