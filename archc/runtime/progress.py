"""Run records and progress display: metrics.jsonl rows, a bar on a terminal, lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class MetricsLog:
    """Append-only `metrics.jsonl`: one JSON object per logged step or evaluation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` (written after the checkpoint a resumed run restarts from)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if _row_step(line) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=True) + "\n")


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line (killed mid-write) is dropped


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete rows of a metrics.jsonl."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a killed run
    return rows


class Progress:
    """A one-line bar redrawn in place on a terminal; plain periodic lines otherwise."""

    def __init__(self, total: int, every: int, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.last_draw = 0.0

    def update(self, step: int, fields: dict[str, str]) -> None:
        """Show progress after `step` optimizer steps (1-based count)."""
        if not self.enabled:
            return
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw < 0.1 and step != self.total:
                return  # redraw at most 10 times a second
            self.last_draw = now
            width = 24
            done = int(width * step / self.total)
            bar = "#" * done + "-" * (width - done)
            self.stream.write(f"\r[{bar}] {step}/{self.total}  {info}\x1b[K")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            self.stream.write(f"step {step}/{self.total}  {info}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line that must not be overwritten by the bar."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
