"""Checkpoints written atomically: a crash mid-write leaves the previous one intact.

The file is written to a temporary name in the same directory, flushed to disk, and
renamed over the old one (rename is atomic on POSIX), so a reader sees either the old
checkpoint or the new one, never half of one. Loading uses `weights_only=True`:
a checkpoint is data and never runs code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write `payload` to `path` so that `path` is always a complete checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable (POSIX); harmless where directories can't be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename already happened
    finally:
        os.close(fd)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_atomic`."""
    return torch.load(path, map_location=device, weights_only=True)
