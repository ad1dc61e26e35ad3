"""Sequence reversal laid out for a teacher-forced encoder-decoder (Sutskever et al.
2014): the source x1..xL, a delimiter, then the target y = xL..x1 as decoder input.

    x1 .. xL  MARK  y1 .. y(L-1) [yL]  BLANK ...
    position L (MARK) targets y1; position L + j targets y(j+1)

Each target step reads the previous target token (teacher forcing) and predicts the
next; the first reads the delimiter (the decoder's "go" token). Data symbols are
0 .. alphabet-1, BLANK = alphabet, MARK = alphabet + 1 (as the copying tasks), so
vocab and classes are alphabet + 2. Rows (B, T) need T >= 2L.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from archc.frontend.tasks import ReverseParams
from archc.runtime.tasks.base import IGNORE, Batch
from archc.runtime.tasks.copying import SymbolTask


class ReverseTask(SymbolTask):
    name: ClassVar[str] = "reverse"
    params_type: ClassVar[type[ReverseParams]] = ReverseParams
    params: ReverseParams

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        n, t = self.params.length, self.seq_len
        data, inputs = self._delimited(size, gen)
        rev = data.flip(1)
        # The decoder's inputs: y1 .. yL after the delimiter, as far as the row reaches.
        room = min(n, t - n - 1)
        inputs[:, n + 1 : n + 1 + room] = rev[:, :room]
        targets = torch.full((size, t), IGNORE, dtype=torch.long)
        targets[:, n : 2 * n] = rev
        return Batch(inputs, targets)
