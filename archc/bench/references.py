"""Hand-written PyTorch models that the benchmarks race against compiled specs.

Each reference creates its parameters in the same order and shapes as the compiled
spec it mirrors, so weights copy across by position and outputs can be checked equal
before any timing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GPT_SPEC = """
model: bench-gpt
vocab: 256
d_model: {d}
define:
  block:
    - residual: [{{norm: layer}}, {{attention: {{heads: {heads}}}}}]
    - residual: [{{norm: layer}}, {{mlp: {{mult: 4, act: gelu}}}}]
layers:
  - embed
  - posenc: {{kind: learned, max_len: 1024}}
  - repeat: {{n: {n}, body: [block]}}
  - norm: layer
  - head: {{tied: true}}
"""

LSTM_SPEC = """
model: bench-lstm
vocab: 256
d_model: {d}
layers:
  - embed
  - lstm: {{hidden: {h}, layers: 2}}
  - linear: {{out: {d}}}
  - head
"""


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.o = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=True
        )
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class HandGPT(nn.Module):
    """GPT-style LM: embed + learned positions, pre-norm blocks, tied head. (B, T) -> (B, T, V)."""

    def __init__(self, vocab: int, d: int, heads: int, n: int, max_len: int = 1024) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)  # a submodule keeps creation order
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(n))
        self.ln = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos.weight[: tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln(x), self.embed.weight)


class HandLSTM(nn.Module):
    """Embed -> 2-layer nn.LSTM -> linear -> head. (B, T) -> (B, T, V)."""

    def __init__(self, vocab: int, d: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, num_layers=2, batch_first=True)
        self.proj = nn.Linear(hidden, d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.embed(tokens))
        return self.head(self.proj(y))


def copy_by_position(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in creation order; shapes must agree one to one."""
    ps, pd = list(src.parameters()), list(dst.parameters())
    if len(ps) != len(pd) or any(a.shape != b.shape for a, b in zip(ps, pd, strict=True)):
        raise ValueError("reference and compiled model have different parameter layouts")
    with torch.no_grad():
        for a, b in zip(ps, pd, strict=True):
            b.copy_(a)
