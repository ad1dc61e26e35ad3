"""Atomic checkpoint writes survive a crash mid-write; loading never unpickles code."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import archc.runtime.checkpoint as ckpt
from archc.runtime.checkpoint import load, save_atomic

CANARY_NAME = "pwned"


class Custom:
    """An arbitrary object: a checkpoint must not be able to hold one."""

    def __init__(self) -> None:
        self.x = 1


class Exploit:
    """Unpickling this would create a file next to the checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


def payload(seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "format": 1,
        "step": seed * 10,
        "model": {"w": torch.randn(3, 4, generator=gen), "b": torch.arange(4)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(5, generator=gen)}}, "lr": [0.1]},
        "rng": {"torch": torch.get_rng_state()},
        "metrics": {"loss": 1.5, "name": "run", "flags": [True, None], "pair": (1, 2)},
    }


def assert_equal(a: Any, b: Any) -> None:
    """Deep equality with tensors compared exactly (dtype and values)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ckpt.CHECKPOINT
    save_atomic(payload(1), path)
    assert_equal(load(path), payload(1))
    save_atomic(payload(2), path)  # overwriting replaces the old one
    assert_equal(load(path), payload(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT]


def test_crash_mid_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ckpt.CHECKPOINT
    save_atomic(payload(1), path)
    before = path.read_bytes()

    def crash(obj: Any, fh: io.BufferedWriter, *args: Any, **kwargs: Any) -> None:
        fh.write(b"PK\x03\x04 half a checkpoint")
        fh.flush()
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic(payload(2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_equal(load(path), payload(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT]  # no temp file


def test_crash_on_first_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(obj: Any, fh: io.BufferedWriter, *args: Any, **kwargs: Any) -> None:
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_atomic(payload(1), tmp_path / ckpt.CHECKPOINT)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Custom()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load(path)


def test_load_never_runs_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    canary = tmp_path / CANARY_NAME
    torch.save({"step": 1, "x": Exploit(canary)}, path)
    assert not canary.exists()
    with pytest.raises(pickle.UnpicklingError):
        load(path)
    assert not canary.exists()
