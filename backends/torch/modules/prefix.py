"""Modules of the prefix-conditioned ops (archc/ir/ops_prefix.py).

`Seq2SeqLSTM`: Sutskever et al. 2014's encoder-decoder over one stream. Positions
< source run the encoder LSTM; the decoder LSTM (its own weights) continues from the
encoder's final (h, c), so at any position the model is one LSTM whose weights switch at
`source`: chunked (incremental) runs just carry (h, c) and the offset.

`prefix_linear_attention`: normalised linear attention with a feature map, plus
JRT-RNN's non-causal prefix (Arora et al. 2024): with q, k, v and prefix keys ke,

    y_i = phi(q_i) [sum_{j<P} phi(ke_j)^T v_j + sum_{j<=i} phi(k_j)^T v_j]
          / phi(q_i) [sum_{j<P} phi(ke_j)^T   + sum_{j<=i} phi(k_j)^T]

so every prefix position reads the whole prefix and later positions decode causally
from the prefix's state. The causal sum runs chunk by chunk: within a chunk a masked
(C, C) product, across chunks a carried (F, dv) state. Nothing here names archc (the
standalone emitter copies these definitions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.fused import FusedLSTM


class Seq2SeqLSTM(nn.Module):
    """(B, T, D) -> (y (B, T, hidden), (h, c) each (layers, B, hidden)); `pos` is the
    absolute position of x's first token (chunked runs), `state` the carried (h, c)."""

    def __init__(self, d_in: int, hidden: int, layers: int, source: int, bias: bool = True) -> None:
        super().__init__()
        self.source = source
        self.enc = FusedLSTM(d_in, hidden, num_layers=layers, bias=bias, batch_first=True)
        self.dec = FusedLSTM(d_in, hidden, num_layers=layers, bias=bias, batch_first=True)

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        pos: int = 0,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if lengths is not None:
            # Right-padded rows would hand the decoder a state from past their end.
            raise ValueError("seq2seq runs whole (unpadded) sequences only")
        t = x.shape[1]
        cut = max(0, min(self.source - pos, t))  # tokens of this chunk in the source
        ys = []
        if cut > 0:
            y, state = self.enc(x[:, :cut], state)
            ys.append(y)
        if cut < t:
            y, state = self.dec(x[:, cut:], state)
            ys.append(y)
        assert state is not None
        return torch.cat(ys, dim=1) if len(ys) > 1 else ys[0], state


def feature_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """phi(x) for (..., f): elu + 1 (..., f), or the 2nd-order Taylor features of
    exp(q.k / sqrt(f)), [1, x / f^(1/4), vec(x x^T) / (sqrt(2) sqrt(f))] (..., 1 + f + f^2),
    whose products are 1 + s + s^2 / 2 > 0 with s = q.k / sqrt(f)."""
    if kind == "elu":
        return F.elu(x) + 1.0
    f = x.shape[-1]
    xs = x / f**0.25
    outer = (xs.unsqueeze(-1) * xs.unsqueeze(-2)).flatten(-2) / 2**0.5
    return torch.cat([torch.ones_like(x[..., :1]), xs, outer], dim=-1)


def prefix_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ke: torch.Tensor | None,
    heads: int,
    kind: str,
    prefix: int,
    chunk: int = 64,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """q, k, ke (B, T, H f), v (B, T, H dv) -> (y (B, T, H dv), (S (B, H, F, dv),
    z (B, H, F))): the carried causal sums after the last token (prefix term included).

    The prefix (the first min(prefix, T) tokens, read through ke) is only allowed in a
    run that starts at position 0 (`state` None); `state` continues a causal run.
    """
    b, t, _ = q.shape

    def split(a: torch.Tensor) -> torch.Tensor:  # (B, T, H w) -> (B, H, T, w)
        return a.view(b, t, heads, -1).transpose(1, 2)

    fq, fk, vh = feature_map(split(q), kind), feature_map(split(k), kind), split(v)
    # Accumulate in fp32 at least: the sums grow with T.
    acc = torch.promote_types(fq.dtype, torch.float32)
    fq, fk, vh = fq.to(acc), fk.to(acc), vh.to(acc)
    if state is None:
        s = fq.new_zeros(b, heads, fq.shape[-1], vh.shape[-1])
        z = fq.new_zeros(b, heads, fq.shape[-1])
    else:
        s, z = state
    p = min(prefix, t)
    if p > 0:
        assert ke is not None and state is None, "the prefix needs the sequence from its start"
        fe = feature_map(split(ke)[:, :, :p], kind).to(acc)
        s = s + fe.transpose(-1, -2) @ vh[:, :, :p]
        z = z + fe.sum(dim=2)
    outs = []
    for lo in range(0, t, chunk):
        hi = min(lo + chunk, t)
        qc, kc, vc = fq[:, :, lo:hi], fk[:, :, lo:hi], vh[:, :, lo:hi]
        scores = (qc @ kc.transpose(-1, -2)).tril()  # (B, H, C, C): j <= i within the chunk
        num = qc @ s + scores @ vc
        den = (qc @ z.unsqueeze(-1)).squeeze(-1) + scores.sum(dim=-1)
        outs.append(num / den.unsqueeze(-1))
        s = s + kc.transpose(-1, -2) @ vc
        z = z + kc.sum(dim=2)
    y = torch.cat(outs, dim=2).to(v.dtype)
    return y.transpose(1, 2).reshape(b, t, -1), (s, z)
