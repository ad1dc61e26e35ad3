"""torchrun with 2 CPU processes (gloo) computes the losses of 1 process on the same batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from training_helpers import REPO

from archc.runtime import checkpoint as ckpt
from archc.runtime.progress import read_metrics

ARGS = (
    "specs/mqar-attention.yaml",
    "train.steps=6",
    "train.seq_len=32",
    "train.batch_size=8",
    "train.log_interval=1",
    "train.eval_interval=3",
    "-q",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_processes_match_one(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "archc", "train", *ARGS, "--out", str(tmp_path / "one")])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "archc",
            "train",
            *ARGS,
            "--out",
            str(tmp_path / "two"),
        ]
    )
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two]  # rank 0 alone wrote rows
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "grad_norm", "eval_loss"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (key, a, b)
    w1 = ckpt.load(tmp_path / "one" / ckpt.CHECKPOINT)["model"]
    w2 = ckpt.load(tmp_path / "two" / ckpt.CHECKPOINT)["model"]
    for name in w1:
        assert (w1[name] - w2[name]).abs().max() <= 1e-5, name
