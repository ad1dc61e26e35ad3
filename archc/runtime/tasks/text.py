"""Byte-level language modelling of one text file (vocab 256, loss in bits per byte).

The file is read once into a uint8 tensor; its last `val_fraction` is held out. A batch
row is a window of T + 1 consecutive bytes: inputs its first T, targets its last T.
Windows are gathered with one tensor index, never a Python loop over bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from archc.frontend.tasks import TextParams
from archc.runtime.tasks.base import IGNORE, Batch, Task, TaskError, need, validate_params


def load_bytes(path: Path | None) -> torch.Tensor:
    """The whole file as a (N,) uint8 tensor; TaskError(field="data") if unusable."""
    if path is None:
        raise TaskError(
            "the text task needs a data file: pass --data FILE or set train.data", field="data"
        )
    path = Path(path)
    if path.is_dir():
        raise TaskError(f"data file '{path}' is a directory", field="data")
    try:
        size = path.stat().st_size
        if size == 0:
            raise TaskError(f"data file '{path}' is empty", field="data")
        return torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    except FileNotFoundError:
        raise TaskError(f"data file '{path}' does not exist", field="data") from None
    except (OSError, RuntimeError) as exc:
        raise TaskError(f"cannot read data file '{path}': {exc}", field="data") from exc


class TextTask(Task):
    """Next-byte prediction: inputs (B, T) and targets (B, T) from (B, T + 1) windows."""

    name: ClassVar[str] = "text"
    params_type: ClassVar[type[TextParams]] = TextParams
    params: TextParams
    is_text = True

    def __init__(
        self,
        params: TextParams,
        seq_len: int,
        data: Path | None = None,
        *,
        _raw: torch.Tensor | None = None,
    ) -> None:
        self._raw = _raw  # already-loaded bytes (with_params), so the file is read once
        super().__init__(params, seq_len, data)

    def _setup(self) -> None:
        if self._raw is None:
            self._raw = load_bytes(self.data)
        total = self._raw.numel()
        held = round(total * self.params.val_fraction)
        self.train_bytes, self.eval_bytes = self._raw[: total - held], self._raw[total - held :]
        self.vocab = self.classes = 256
        window = self.seq_len + 1
        for part, split in ((self.train_bytes, "training"), (self.eval_bytes, "held-out")):
            need(
                window <= part.numel(),
                f"seq_len {self.seq_len} needs windows of {window} bytes, but the {split} "
                f"part of '{self.data}' has {part.numel()} bytes ({total} in all, "
                f"val_fraction {self.params.val_fraction})",
                "seq_len",
                hint=f"use seq_len <= {min(self.train_bytes.numel(), self.eval_bytes.numel()) - 1}"
                " or a larger file",
            )

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        part = self.train_bytes if split == "train" else self.eval_bytes
        starts = torch.randint(0, part.numel() - self.seq_len, (size,), generator=gen)
        return self._windows(part, starts)

    def _windows(self, part: torch.Tensor, starts: torch.Tensor) -> Batch:
        """Rows of T + 1 bytes starting at `starts` (B,), split into inputs and targets."""
        window = part[starts.unsqueeze(1) + torch.arange(self.seq_len + 1)].long()
        # Own storage for the targets: they overlap the inputs in `window`, and eval masks
        # targets in place.
        return Batch(window[:, :-1], window[:, 1:].clone())

    def eval_batches(self, size: int, count: int | None, seed: int) -> Iterator[Batch]:
        """The held-out part in order (see `tiled_batches`). `seed` is unused."""
        return self.tiled_batches(self.eval_bytes, size, count)

    def tiled_batches(self, part: torch.Tensor, size: int, count: int | None) -> Iterator[Batch]:
        """`part` (N,) bytes in order, every byte after the first scored exactly once.

        Windows start every T bytes, so their targets tile the part without overlap. When
        T does not divide the part, one last window ends at the part's end, with its
        already-scored targets set to IGNORE. Batches hold `size` windows (the last may
        hold fewer); at most `count` batches when given. Needs N >= T + 1.
        """
        t, n = self.seq_len, part.numel()
        if n < t + 1:
            raise TaskError(f"{n} bytes are fewer than one window of seq_len + 1 = {t + 1}")
        starts = torch.arange(0, n - t, t)  # every start s with s + t + 1 <= n
        tail = (n - 1) - starts.numel() * t  # targets left after the tiled windows
        if tail:
            starts = torch.cat([starts, torch.tensor([n - 1 - t])])
        firsts = range(0, starts.numel(), size)
        for first in firsts if count is None else firsts[:count]:
            chunk = starts[first : first + size]
            batch = self._windows(part, chunk)
            if tail and first + chunk.numel() == starts.numel():
                batch.targets[-1, : t - tail] = IGNORE
            yield batch

    def with_params(self, **changes: Any) -> TextTask:
        params = validate_params(TextParams, {**self.params.model_dump(), **changes})
        assert isinstance(params, TextParams)
        return TextTask(params, self.seq_len, self.data, _raw=self._raw)

    def encode(self, text: str) -> torch.Tensor:
        """(T,) ids: the UTF-8 bytes of `text`."""
        raw = text.encode("utf-8")
        if not raw:  # frombuffer rejects an empty buffer
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()

    def decode(self, ids: Sequence[int]) -> str:
        """The bytes `ids` as UTF-8, invalid sequences replaced."""
        try:
            raw = bytes(int(i) for i in ids)
        except ValueError:
            raise TaskError("byte ids must lie in [0, 256)") from None
        return raw.decode("utf-8", errors="replace")
