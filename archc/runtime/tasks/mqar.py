"""Multi-query associative recall, laid out as in Zoology (Arora, Eyuboglu et al. 2023).

A row of length T with K key-value pairs:

    k1 v1 k2 v2 ... kK vK | filler ... kq ... filler ... kq' ...
    <------ 2K tokens ---> <---------- T - 2K tokens ---------->

Keys are distinct ids from [1, vocab // 2), values distinct ids from [vocab // 2, vocab).
Every key is queried once, in random order: query j sits at position 2K + 2 * gap_j, the
gaps drawn without replacement from {0, ..., (T - 2K) // 2 - 1} with probability
proportional to (gap + 1) ** (power_a - 1), so short recall distances dominate as in
natural text. The target at a query position is its value (next-token prediction);
every other position is unsupervised. Filler is token 0, or uniform random ids in
[0, vocab) when random_non_queries.

`repeat_context: r` (JRT-Prompt, Arora et al. 2024, "Just read twice") writes the 2K
pair tokens r times in a row, the very same tokens, before the query region; 2K above
then reads 2Kr (queries and gaps start after the last copy).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from archc.frontend.tasks import MqarParams
from archc.runtime.tasks.base import IGNORE, Batch, Task


class MqarTask(Task):
    name: ClassVar[str] = "mqar"
    params_type: ClassVar[type[MqarParams]] = MqarParams
    params: MqarParams

    def _setup(self) -> None:
        p, t = self.params, self.seq_len
        self.vocab = self.classes = p.vocab
        context = 2 * p.num_kv_pairs * p.repeat_context
        space = (t - context) // 2
        gaps = torch.arange(1, space + 1, dtype=torch.float64)
        # Unnormalised weights are enough: multinomial normalises each row.
        self._gap_weights = (gaps ** (p.power_a - 1)).float()

    def _generate(self, split: str, size: int, gen: torch.Generator) -> Batch:
        p, t = self.params, self.seq_len
        k, half = p.num_kv_pairs, p.vocab // 2
        ctx = 2 * k * p.repeat_context  # the pairs, written repeat_context times
        rows = torch.arange(size).unsqueeze(1)
        # K distinct keys per row: the top-K of uniform noise is a uniform random subset.
        keys = torch.rand(size, half - 1, generator=gen).topk(k, dim=1).indices + 1
        values = torch.rand(size, p.vocab - half, generator=gen).topk(k, dim=1).indices + half

        inputs = torch.zeros(size, t, dtype=torch.long)
        inputs[:, 0 : 2 * k : 2] = keys
        inputs[:, 1 : 2 * k : 2] = values
        inputs[:, 2 * k : ctx] = inputs[:, : 2 * k].repeat(1, p.repeat_context - 1)
        gaps = torch.multinomial(
            self._gap_weights.expand(size, -1), k, replacement=False, generator=gen
        )
        # Key i is queried at its own gap, so query order is the random order of the gaps.
        where = ctx + 2 * gaps
        filler = torch.ones(size, t, dtype=torch.bool)
        filler[:, :ctx] = False
        filler[rows, where] = False
        inputs[rows, where] = keys
        if p.random_non_queries:
            noise = torch.randint(0, p.vocab, (size, t), generator=gen)
            inputs = torch.where(filler, noise, inputs)

        targets = torch.full((size, t), IGNORE, dtype=torch.long)
        targets[rows, where] = values
        return Batch(inputs, targets)
