"""Bit-stream tasks from the long-timescales curriculum study: N-parity and N-DMS.

Inputs are uniform random bits (B, T). The target at each step depends only on the
inputs and n, so one batch can be relabelled for several n at once (multi-head
curricula): see `Task.relabel`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F

from archc.frontend.tasks import DmsParams, ParityParams
from archc.runtime.tasks.base import IGNORE, Batch, Task


class _BitsTask(Task):
    """Random bits in, one binary label per step out."""

    params: ParityParams | DmsParams

    def _setup(self) -> None:
        self.vocab = self.classes = 2

    @abstractmethod
    def _first_supervised(self) -> int:
        """The first position with a target."""

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        bits = torch.randint(0, 2, (size, self.seq_len), generator=gen)
        return Batch(bits, self._targets(bits))


class ParityTask(_BitsTask):
    """Target at t: (x[t-n+1] + ... + x[t]) mod 2; positions t < n - 1 unsupervised."""

    name: ClassVar[str] = "parity"
    params_type: ClassVar[type[ParityParams]] = ParityParams

    def _first_supervised(self) -> int:
        return self.params.n - 1

    def _targets(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.params.n
        # Window sums as differences of a prefix sum padded with n zeros on the left:
        # c[t + n] - c[t] = x[t-n+1] + ... + x[t] (missing bits count as 0).
        c = F.pad(inputs.long().cumsum(dim=1), (n, 0))
        targets = (c[:, n:] - c[:, :-n]) % 2
        targets[:, : n - 1] = IGNORE
        return targets


class DmsTask(_BitsTask):
    """Target at t: 1 if x[t] == x[t - n] else 0; positions t < n unsupervised."""

    name: ClassVar[str] = "dms"
    params_type: ClassVar[type[DmsParams]] = DmsParams

    def _first_supervised(self) -> int:
        return self.params.n

    def _targets(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.params.n
        targets = torch.full(inputs.shape, IGNORE, dtype=torch.long, device=inputs.device)
        targets[:, n:] = (inputs[:, n:] == inputs[:, :-n]).long()
        return targets
