"""The task interface the trainer uses: seeded, stateless batch generation.

A batch is a pure function of (seed, split, index, size): a resumed run regenerates
exactly the batches an uninterrupted one would have seen, and every data-parallel rank
can build the same global batch and keep its own rows. No task downloads anything.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from archc.frontend.tasks import TaskParams

IGNORE = -100  # target id that the loss and accuracy skip (torch's cross-entropy default)

SPLITS = ("train", "eval")
DEFAULT_EVAL_BATCHES = 8


@dataclass
class Batch:
    """One batch: `inputs` (B, T) int64 ids in [0, vocab); `targets` (B, T) int64 class
    ids in [0, classes), or IGNORE where a position is unsupervised."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Both tensors moved to `device`."""
        return Batch(self.inputs.to(device), self.targets.to(device))

    def rows(self, start: int, stop: int) -> Batch:
        """Rows [start, stop): one data-parallel rank's share of a global batch."""
        return Batch(self.inputs[start:stop], self.targets[start:stop])


class TaskError(Exception):
    """A user mistake; `field` names what to point at: "seq_len", "data", or "task.<param>"."""

    def __init__(self, message: str, field: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint


def batch_generator(seed: int, split: str, index: int, size: int) -> torch.Generator:
    """A CPU generator seeded by hashing (seed, split, index, size).

    Hashing (rather than seed + index) keeps the train and eval streams, and nearby
    seeds, from sharing batches.
    """
    key = f"{seed}\x00{split}\x00{index}\x00{size}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def validate_params(schema: type[TaskParams], values: dict[str, Any]) -> TaskParams:
    """`schema(**values)`, with a validation failure turned into a TaskError."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        field = f"task.{where}" if where else "task"
        msg = err["msg"].removeprefix("Value error, ")
        raise TaskError(f"{where + ': ' if where else ''}{msg}", field=field) from exc


class Task(ABC):
    """A built-in training task: validated parameters plus a seeded batch generator."""

    name: ClassVar[str]
    params_type: ClassVar[type[TaskParams]]
    is_text: bool = False  # loss reported as bits per byte

    vocab: int  # input ids are in [0, vocab)
    classes: int  # logits per position the model must produce

    def __init__(self, params: TaskParams, seq_len: int, data: Path | None = None) -> None:
        if not isinstance(params, self.params_type):
            raise TypeError(f"task '{self.name}' takes {self.params_type.__name__}")
        if seq_len < 1:
            raise TaskError(f"seq_len must be positive, got {seq_len}", field="seq_len")
        problem = params.seq_len_problem(seq_len)
        if problem is not None:
            raise TaskError(problem[0], field="seq_len", hint=problem[1])
        self.params = params
        self.seq_len = seq_len
        self.data = data
        self._setup()

    @abstractmethod
    def _setup(self) -> None:
        """Validate params against seq_len (and data); set vocab and classes."""

    @abstractmethod
    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        """A (size, seq_len) batch drawn with `gen`."""

    def batch(self, split: str, index: int, size: int, seed: int) -> Batch:
        """Batch `index` of the `split` stream: (size, seq_len), deterministic in its args."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if size < 1 or index < 0:
            raise ValueError(f"need size >= 1 and index >= 0, got size={size} index={index}")
        return self._generate(split, size, batch_generator(seed, split, index, size))

    def eval_batches(self, size: int, count: int | None, seed: int) -> Iterator[Batch]:
        """`count` fixed eval batches (default 8), the same for every call with this seed."""
        for i in range(DEFAULT_EVAL_BATCHES if count is None else count):
            yield self.batch("eval", i, size, seed)

    def with_params(self, **changes: Any) -> Task:
        """A copy of this task with some parameters changed (curricula)."""
        params = validate_params(self.params_type, {**self.params.model_dump(), **changes})
        return type(self)(params, self.seq_len, self.data)

    def relabel(self, inputs: torch.Tensor, **changes: Any) -> torch.Tensor:
        """Targets (B, T) for other values of multi-head parameters, from the same inputs."""
        allowed = self.params_type.multi_head
        if not allowed:
            raise TypeError(f"task '{self.name}' has no multi-head parameters to relabel")
        bad = sorted(set(changes) - set(allowed))
        if bad:
            raise TypeError(f"task '{self.name}' cannot relabel {bad}; only {list(allowed)}")
        return self.with_params(**changes)._targets(inputs)

    def _targets(self, inputs: torch.Tensor) -> torch.Tensor:
        """Targets (B, T) for `inputs` (B, T); tasks with multi-head params override this."""
        raise TypeError(f"task '{self.name}' cannot compute targets from inputs alone")

    def encode(self, text: str) -> torch.Tensor:
        """(T,) ids from whitespace-separated integers in [0, vocab)."""
        ids: list[int] = []
        for word in text.split():
            try:
                ids.append(int(word))
            except ValueError:
                raise TaskError(
                    f"'{word}' is not a token id", hint=f"ids are integers in [0, {self.vocab})"
                ) from None
            if not 0 <= ids[-1] < self.vocab:
                raise TaskError(
                    f"token id {ids[-1]} is out of range for task '{self.name}'",
                    hint=f"ids are integers in [0, {self.vocab})",
                )
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        """Space-separated ids."""
        return " ".join(str(int(i)) for i in ids)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args}, seq_len={self.seq_len})"


def need(ok: bool, message: str, field: str, hint: str | None = None) -> None:
    """Raise TaskError(message, field, hint) unless `ok`."""
    if not ok:
        raise TaskError(message, field=field, hint=hint)
