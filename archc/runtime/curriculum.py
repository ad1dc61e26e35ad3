"""Curricula: a task parameter stepped from `start` to `end` while training.

single-head: the task is trained at the current value only.
multi-head: the model has one output head per value; heads for values reached so far
are trained together on the same inputs, later heads are masked out (the
long-timescales study's multi-head curriculum).
"""

from __future__ import annotations

from typing import Any

import torch

from archc.frontend.train import Curriculum
from archc.runtime.tasks import IGNORE, Batch, Task


class CurriculumState:
    """The current level of a curriculum (or a fixed task when there is none)."""

    def __init__(self, cfg: Curriculum | None, base: Task) -> None:
        self.cfg = cfg
        self.base = base
        self.values: list[int] = cfg.values() if cfg else []
        self.level = 0
        self._tasks: dict[int, Task] = {}

    @property
    def heads(self) -> int:
        """Output heads the model must have (1 unless multi-head)."""
        return len(self.values) if self.cfg and self.cfg.mode == "multi" else 1

    @property
    def value(self) -> int | None:
        return self.values[self.level] if self.cfg else None

    def task(self) -> Task:
        """The task at the current level."""
        if self.cfg is None:
            return self.base
        if self.level not in self._tasks:
            self._tasks[self.level] = self.base.with_params(**{self.cfg.param: self.value})
        return self._tasks[self.level]

    def targets(self, batch: Batch) -> torch.Tensor:
        """(B, T) targets, or (B, T, K) for K heads with not-yet-reached heads IGNOREd."""
        if self.heads == 1:
            return batch.targets
        assert self.cfg is not None
        cols = []
        for j, v in enumerate(self.values):
            if j <= self.level:
                cols.append(self.base.relabel(batch.inputs, **{self.cfg.param: v}))
            else:
                cols.append(torch.full_like(batch.targets, IGNORE))
        return torch.stack(cols, dim=-1)

    def advance_after_step(self, steps_done: int) -> bool:
        """Step-scheduled curricula move on every `every` steps."""
        if self.cfg is None or self.cfg.every is None or steps_done % self.cfg.every:
            return False
        return self._next()

    def advance_after_eval(self, accuracy: float) -> bool:
        """Accuracy-driven curricula move on once `advance_at` is reached."""
        if self.cfg is None or self.cfg.advance_at is None or accuracy < self.cfg.advance_at:
            return False
        return self._next()

    def _next(self) -> bool:
        if self.level + 1 >= len(self.values):
            return False
        self.level += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level = int(state["level"])
