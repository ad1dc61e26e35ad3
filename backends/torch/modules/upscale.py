"""Depth up-scaling (SOLAR; Kim et al. 2023, "SOLAR 10.7B: scaling LLMs with simple yet
effective depth up-scaling") inside one training run.

The `upscale` op owns 2 (n - m) blocks from the start: copy A (blocks 0..n-m-1, base
layers 0..n-m-1) and copy B (blocks n-m..2(n-m)-1, base layers m..n-1). Until training
step `at_step` only the base path runs: copy A, then copy B's last m blocks (base
layers n-m..n-1). The other copy-B blocks get no gradient, so AdamW (which skips
parameters whose .grad is None) leaves them and their optimizer state untouched. At
`at_step` copy A's blocks m..n-m-1 are copied into copy B's blocks 0..n-2m-1, which
completes the SOLAR stack [base 0..n-m-1] + [base m..n-1], and every block runs from
then on. The switch is a persistent buffer, so checkpoints carry it.

Every definition here uses math/torch/nn/F alone (copied into model.py).
"""

from __future__ import annotations

import torch
from torch import nn


class DepthUpscale(nn.Module):
    """The switch of one up-scaled stack; its blocks are its submodules "0".."2(n-m)-1"
    (placed under its path by the model). `begin_step(step)` performs the up-scale once
    step >= at_step; `upscale()` does it now."""

    def __init__(self, base: int, drop: int, at_step: int) -> None:
        super().__init__()
        self.base, self.drop, self.at_step = base, drop, at_step
        self.register_buffer("done", torch.zeros((), dtype=torch.bool))
        self.stats_values: dict[str, float] | None = None

    def program(self) -> tuple[int, ...]:
        """The block order this forward runs: the base path, or every block."""
        half = self.base - self.drop
        if bool(self.done):
            return tuple(range(2 * half))
        return (*range(half), *range(half + self.base - 2 * self.drop, 2 * half))

    def forward(self) -> tuple[int, ...]:
        """The block order of this forward (and its depth, logged as a statistic)."""
        prog = self.program()
        self.stats_values = {"depth": float(len(prog))}
        return prog

    def begin_step(self, step: int) -> bool:
        """Before training step `step`: up-scale if it is due; True if it happened now."""
        if bool(self.done) or step < self.at_step:
            return False
        self.upscale()
        return True

    @torch.no_grad()
    def upscale(self) -> None:
        """Copy copy A's blocks m..n-m-1 into copy B's blocks 0..n-2m-1 and switch."""
        half, m = self.base - self.drop, self.drop
        blocks = dict(self.named_children())
        for j in range(self.base - 2 * m):
            a, b = blocks.get(str(m + j)), blocks.get(str(half + j))
            src = {} if a is None else dict(a.named_parameters())
            dst = {} if b is None else dict(b.named_parameters())
            if src.keys() != dst.keys():
                raise ValueError(f"up-scale: blocks {m + j} and {half + j} differ")
            for name, p in dst.items():
                p.copy_(src[name])
        self.done.fill_(True)
