"""SortedNet nested sub-networks (Valipour et al. 2023): a stack of residual MLP blocks
whose every sub-network (a prefix of each block's hidden units, a prefix of the blocks)
is trained by sampling one per training step. Layer-path programs (CoLa) need no module:
the lowering calls the pool's region functions in the program's order.

Every definition here uses math/torch/nn/F alone (copied into model.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NestedMLP(nn.Module):
    """`layers` blocks x <- x + W2[:, :h] act(W1[:h] rmsnorm(x) + b1[:h]) + b2 over the
    first `depth` blocks, h = round(width * hidden). Sorted (nested) sub-networks share
    the leading units/blocks, so the small networks are prefixes of the big one.

    Training draws (width, depth) uniformly from `widths` x `depths` per forward with the
    global torch RNG; eval runs (eval_width, eval_depth), changeable with `choose`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        layers: int,
        act: str,
        widths: tuple[float, ...],
        depths: tuple[int, ...],
        eval_width: float = 1.0,
        eval_depth: int | None = None,
    ) -> None:
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(layers, dim))
        self.w_up = nn.Parameter(torch.empty(layers, hidden, dim))
        self.b_up = nn.Parameter(torch.zeros(layers, hidden))
        self.w_down = nn.Parameter(torch.empty(layers, dim, hidden))
        self.b_down = nn.Parameter(torch.zeros(layers, dim))
        self.hidden, self.act = hidden, act
        self.widths, self.depths = tuple(widths), tuple(depths)
        self.choose(eval_width, eval_depth or layers)
        self.stats_values: dict[str, float] | None = None

    def choose(self, width: float, depth: int) -> None:
        """The sub-network eval runs: a width fraction in (0, 1] and a depth >= 1."""
        if not 0 < width <= 1 or not 1 <= depth <= self.w_up.shape[0]:
            raise ValueError(f"no sub-network of width {width} and depth {depth}")
        self.eval_width, self.eval_depth = float(width), int(depth)

    def units(self, width: float) -> int:
        """Hidden units of each block at a width fraction."""
        return max(1, round(width * self.hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D) through the sampled (training) or chosen sub-network."""
        if self.training:
            width = self.widths[int(torch.randint(len(self.widths), ()))]
            depth = self.depths[int(torch.randint(len(self.depths), ()))]
        else:
            width, depth = self.eval_width, self.eval_depth
        self.stats_values = {"nested_width": float(width), "nested_depth": float(depth)}
        return self.run(x, width, depth)

    def run(self, x: torch.Tensor, width: float, depth: int) -> torch.Tensor:
        """(B, T, D) through the sub-network of `width` and `depth`."""
        h = self.units(width)
        act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "tanh": torch.tanh}[self.act]
        for i in range(depth):
            y = F.rms_norm(x, (x.shape[-1],), self.norm_weight[i], 1e-5)
            u = act(F.linear(y, self.w_up[i, :h], self.b_up[i, :h]))
            x = x + F.linear(u, self.w_down[i, :, :h], self.b_down[i])
        return x


class PathChoice(nn.Module):
    """Which of `n` layer-path programs each sample runs (CoLa per-sample paths).

    `choose(c)` sets it: an int for every sample or a (B,) int64 tensor (e.g. found by a
    search per sample); the default is program 0. With sample="random", training draws
    one per sample from the global torch RNG instead.
    """

    def __init__(self, n: int, sample: str = "fixed") -> None:
        super().__init__()
        self.n, self.sample = n, sample
        self.choice: int | torch.Tensor = 0
        self.stats_values: dict[str, float] | None = None

    def choose(self, choice: int | torch.Tensor) -> None:
        """Set the program of every sample (int) or of each sample ((B,) tensor)."""
        c = torch.as_tensor(choice)
        if bool(((c < 0) | (c >= self.n)).any()):
            raise ValueError(f"program choice out of range 0..{self.n - 1}")
        self.choice = choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> the program index of each sample, (B,) int64."""
        b = x.shape[0]
        if self.training and self.sample == "random":
            ch = torch.randint(self.n, (b,)).to(x.device)
        elif isinstance(self.choice, int):
            ch = torch.full((b,), self.choice, dtype=torch.long, device=x.device)
        else:
            ch = self.choice.to(device=x.device, dtype=torch.long).reshape(-1)
            if ch.shape[0] != b:
                raise ValueError(f"{ch.shape[0]} program choices for a batch of {b}")
        counts = torch.bincount(ch, minlength=self.n).tolist()
        self.stats_values = {f"program_{p}": c / b for p, c in enumerate(counts)}
        return ch
