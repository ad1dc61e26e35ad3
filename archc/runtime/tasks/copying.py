"""Copying tasks: plain copy, and selective copying from the Mamba paper.

Both use data symbols 0 .. alphabet-1, then two special tokens: BLANK = alphabet and
MARK = alphabet + 1 (copy's delimiter, selective copy's recall marker). Vocab and
classes are alphabet + 2, so an ordinary language-model head fits; targets are always
data symbols.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from archc.frontend.tasks import CopyParams, ReverseParams, SelectiveCopyParams
from archc.runtime.tasks.base import IGNORE, Batch, Task


class SymbolTask(Task):
    """A task over data symbols 0 .. alphabet-1 plus BLANK = alphabet and MARK =
    alphabet + 1; vocab and classes are alphabet + 2. Its params have `alphabet`."""

    params: CopyParams | SelectiveCopyParams | ReverseParams

    def _setup(self) -> None:
        self.blank, self.mark = self.params.alphabet, self.params.alphabet + 1
        self.vocab = self.classes = self.params.alphabet + 2

    def _delimited(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(data (size, L), inputs (size, T)): rows x1..xL, MARK, then blanks, with L the
        params' `length`."""
        n = self.params.length  # type: ignore[union-attr]
        data = torch.randint(0, self.params.alphabet, (size, n), generator=gen)
        inputs = torch.full((size, self.seq_len), self.blank, dtype=torch.long)
        inputs[:, :n] = data
        inputs[:, n] = self.mark
        return data, inputs


class CopyTask(SymbolTask):
    """x1..xL, delimiter, blanks; positions L+1 .. 2L (after the delimiter) target x1..xL.

    (B, T) rows with T >= 2L + 1; positions after 2L are blank and unsupervised.
    """

    name: ClassVar[str] = "copy"
    params_type: ClassVar[type[CopyParams]] = CopyParams
    params: CopyParams

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        n, t = self.params.length, self.seq_len
        data, inputs = self._delimited(size, gen)
        targets = torch.full((size, t), IGNORE, dtype=torch.long)
        targets[:, n + 1 : 2 * n + 1] = data
        return Batch(inputs, targets)


class SelectiveCopyTask(SymbolTask):
    """N data tokens scattered among blanks in the first T - N positions, then N markers
    whose targets are the data tokens in order. (B, T) rows with T >= 2N."""

    name: ClassVar[str] = "selective-copy"
    params_type: ClassVar[type[SelectiveCopyParams]] = SelectiveCopyParams
    params: SelectiveCopyParams

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        n, t = self.params.tokens, self.seq_len
        body = t - n
        data = torch.randint(0, self.params.alphabet, (size, n), generator=gen)
        # N distinct positions in the body per row (top-N of noise), in increasing order.
        where = torch.rand(size, body, generator=gen).topk(n, dim=1).indices.sort(dim=1).values
        inputs = torch.full((size, t), self.blank, dtype=torch.long)
        inputs.scatter_(1, where, data)
        inputs[:, body:] = self.mark
        targets = torch.full((size, t), IGNORE, dtype=torch.long)
        targets[:, body:] = data
        return Batch(inputs, targets)
