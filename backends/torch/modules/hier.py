"""The `hier` op: x + up(inner(down(x))), with the inner network on a coarse sequence.

Down-sampling:
- stride k: groups [jk, jk + k) pooled by their mean or their last element; a short
  last group (T not a multiple of k, or a row's `lengths`) pools its valid positions.
- router (H-Net dynamic chunking): p_t = (1 - cos(q_t, k_{t-1})) / 2 with
  q = x (I + Wq), k = x (I + Wk), p_0 = 1; a chunk starts where p_t >= 1/2 and is
  represented by its first token (the selected positions, packed into a ragged batch,
  run padded with per-row lengths).
- split (HAT byte -> word): a chunk starts at position 0 and at every byte after a
  space (id 32); same machinery, probabilities 0/1.

Inner width: with `inner_dim`, linear maps D -> inner_dim before the inner network and
inner_dim -> D after it (H-Net widens its inner stages).

Up-sampling:
- repeat: each fine position takes the coarse output of its group / chunk;
- linear (stride): W (kD, D) maps a coarse step to k vectors, one per group position;
- cross-attn: multi-head attention from each fine position (query) over the coarse
  steps it may read (keys/values): complete at or before it when causal, for chunks
  those started at or before it; a position that may read none yet gets 0;
- ema (router, H-Net dechunk): z~_j = P_j z_j + (1 - P_j) z~_{j-1} over chunks, P_j the
  boundary probability of chunk j's first token; position t takes z~ of its chunk,
  times STE(c_t), c_t = p_t at chunk starts and 1 - p_t elsewhere, STE(c) = c +
  sg(1 - c) (value 1, gradient of c: how the router learns from the main loss).

Causality (causal=True): coarse step j (tokens [jk, jk + k)) is complete at position
jk + k - 1, so the up-sampled sequence is delayed by k - 1 positions: position t reads
step (t + 1) // k - 1 (zeros before the first group completes), and with up=linear
its row block (t + 1) % k. causal=False: position t reads step t // k.
A chunk is represented by its first token, and p_t and the start decision at t read
x_t and x_{t-1} only, so position t reads the chunk that started at or before t,
computed from tokens <= that start: nothing after t (the inner network must itself be
causal over chunks).

Continuing a sequence (`step`, causal strides with up repeat/linear): the entry carries
the incomplete group's tokens, the last coarse output and the inner network's own
state, so chunked calls equal one full call. Chunked hiers do not continue a sequence
yet (the rows of a batch advance by different numbers of chunks).

Ratio loss (router): N / (N - 1) * ((N - 1) F G + (1 - F)(1 - G)), F the fraction of
positions that start a chunk, G the mean p (H-Net); minimal at F = G = 1 / N. It is
recorded, times `weight`, as `aux_loss_value`; `stats_values` has F ("selected").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.ragged import chunk_of, select_padded

Inner = Callable[..., torch.Tensor]  # (h, lengths[, inc, pos, state, new_state]) -> h


def boundary_probs(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
    """H-Net's boundary probabilities (B, T) of x (B, T, D): p_0 = 1,
    p_t = (1 - cos(q_t, k_{t-1})) / 2 with q = x + x Wq, k = x + x Wk."""
    q, k = x + x @ wq, x + x @ wk
    cos = F.cosine_similarity(q[:, 1:], k[:, :-1], dim=-1)
    first = torch.ones_like(x[:, :1, 0])
    return torch.cat([first, ((1.0 - cos) / 2).clamp(0.0, 1.0)], dim=1)


def ema_smooth(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """z~_j = p_j z_j + (1 - p_j) z~_{j-1}, z~_{-1} = 0, for z (B, L, D), p (B, L).

    Closed form z~_j = sum_{i<=j} p_i prod_{i<m<=j} (1 - p_m) z_i, the products from a
    cumulative sum of log(1 - p): differences of it are <= 0, so exp never overflows.
    """
    n = z.shape[1]
    cum = torch.log1p(-p.clamp(max=1.0 - 1e-6)).cumsum(1)  # (B, L)
    tri = torch.ones(n, n, dtype=torch.bool, device=z.device).tril()
    diff = (cum[:, :, None] - cum[:, None, :]).masked_fill(~tri, 0.0)  # (B, j, i)
    w = torch.exp(diff).masked_fill(~tri, 0.0) * p[:, None, :]
    return w @ z


def split_starts(tokens: torch.Tensor, sep: int = 32) -> torch.Tensor:
    """(B, T) token ids -> (B, T) bool: a chunk starts at 0 and after each `sep` byte."""
    starts = torch.zeros_like(tokens, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = tokens[:, :-1] == sep
    return starts


class Hier(nn.Module):
    """forward(x (B, T, D), inner, lengths, tokens) -> (B, T, D) = x + up(inner(down(x))).

    `inner(h, lengths)` runs the inner network on the coarse (B, T', D) batch whose row
    b is valid up to lengths[b]; `tokens` (B, T) are the ids (split rule only).
    """

    def __init__(
        self,
        dim: int,
        down: str,
        stride: int | None = None,
        pool: str = "mean",
        target: float = 4.0,
        weight: float = 0.03,
        up: str = "repeat",
        causal: bool = True,
        inner_dim: int | None = None,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.down, self.stride, self.pool = down, stride, pool
        self.target, self.weight, self.up_mode, self.causal = target, weight, up, causal
        if down == "router":
            self.q = nn.Parameter(torch.zeros(dim, dim))
            self.k = nn.Parameter(torch.zeros(dim, dim))
        if up == "linear":
            assert stride is not None
            self.up = nn.Parameter(torch.randn(stride * dim, dim) * dim**-0.5)
        self.inner_dim, self.heads = inner_dim, heads
        if up == "cross-attn":  # fine positions (queries) attend over the coarse steps
            for n in ("q", "k", "v", "o"):
                setattr(self, f"up_{n}", nn.Parameter(torch.randn(dim, dim) * dim**-0.5))
        if inner_dim is not None:  # the inner network runs at its own width
            self.proj_in = nn.Parameter(torch.randn(inner_dim, dim) * dim**-0.5)
            self.proj_out = nn.Parameter(torch.randn(dim, inner_dim) * inner_dim**-0.5)
        self.aux_loss_value: torch.Tensor | None = None
        self.stats_values: dict[str, torch.Tensor] = {}

    def forward(
        self,
        x: torch.Tensor,
        inner: Inner,
        lengths: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.down == "stride":
            return x + self._strided(x, inner, lengths)
        return x + self._chunked(x, inner, lengths, tokens)

    def _run(
        self, inner: Callable, h: torch.Tensor, lengths: torch.Tensor | None, *extra: object
    ) -> torch.Tensor:
        """The inner network on the coarse batch h (B, T', D), at its own width; `extra`
        (inc, pos, state, new_state) when continuing a sequence."""
        if self.inner_dim is None:
            return inner(h, lengths, *extra)
        return inner(h @ self.proj_in.t(), lengths, *extra) @ self.proj_out.t()

    def step(
        self,
        x: torch.Tensor,
        inner: Callable,
        entry: dict | None,
        tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Continue a sequence: x (B, t, D) the next tokens (`tokens` their ids, split
        rule), `entry` what the previous call returned (None at the start) -> (output
        (B, t, D), entry); chunked calls equal one full call.

        Causal stride: the entry keeps the incomplete group's tokens, the groups done,
        the last coarse output and the inner network's own state (constant size).
        Router / split: the rows of a batch advance by different numbers of chunks, so
        the entry keeps every row's chunks (ragged, padded) and the inner network reruns
        over them when a chunk starts: exact, but each step costs O(chunks so far).
        """
        if self.down != "stride":
            return self._chunked_step(x, inner, entry, tokens)
        b, t, d = x.shape
        k = self.stride or 1
        e = entry or {"buf": x[:, :0], "groups": 0, "z": None, "seen": 0, "inner": {}}
        seq = torch.cat([e["buf"], x], dim=1)
        g = seq.shape[1] // k  # groups completed in this call
        table, inner_state = [] if e["z"] is None else [e["z"][:, None]], e["inner"]
        if g:
            groups = seq[:, : g * k].view(b, g, k, d)
            coarse = groups.mean(2) if self.pool == "mean" else groups[:, :, -1]
            inner_state = {}
            table.append(self._run(inner, coarse, None, True, e["groups"], e["inner"], inner_state))
        pos = e["seen"] + torch.arange(t, device=x.device)
        j = (pos + 1) // k - 1  # the coarse step each position reads (-1: none yet)
        fine = x.new_zeros(b, t, d)
        if table:
            z = torch.cat(table, dim=1)  # coarse steps first .. groups + g - 1
            first = e["groups"] - (e["z"] is not None)
            zj = z[:, (j - first).clamp_min(0)]  # (B, t, D)
            if self.up_mode == "linear":  # row block (pos + 1) % k of W
                w = self.up.view(k, d, d)[(pos + 1) % k]  # (t, D, D)
                zj = torch.einsum("tod,btd->bto", w, zj)
            fine = torch.where((j >= 0)[None, :, None], zj, fine)
        z_last = torch.cat(table, dim=1)[:, -1] if table else None
        out = {
            "buf": seq[:, g * k :],
            "groups": e["groups"] + g,
            "z": z_last,
            "seen": e["seen"] + t,
            "inner": inner_state,
        }
        return x + fine, out

    def _cross(self, x: torch.Tensor, z: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of x (B, T, D) over z (B, L, D) where allowed (B or 1,
        T, L); a position allowed no step yet gets 0 (its row is masked, not NaN)."""
        b, t, d = x.shape
        n, h = z.shape[1], self.heads
        q = (x @ self.up_q.t()).view(b, t, h, d // h).transpose(1, 2)
        k = (z @ self.up_k.t()).view(b, n, h, d // h).transpose(1, 2)
        v = (z @ self.up_v.t()).view(b, n, h, d // h).transpose(1, 2)
        none = ~allowed.any(-1, keepdim=True)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=(allowed | none).unsqueeze(1))
        return (o.transpose(1, 2).reshape(b, t, d) @ self.up_o.t()).masked_fill(none, 0.0)

    def _strided(self, x: torch.Tensor, inner: Inner, lengths: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        k = self.stride or 1
        n = -(-t // k)
        pos = torch.arange(n * k, device=x.device)
        valid = (pos < t)[None] if lengths is None else pos[None] < lengths[:, None]
        groups = F.pad(x, (0, 0, 0, n * k - t)).view(b, n, k, d)
        mask = valid.view(-1, n, k, 1).to(x.dtype)  # (B or 1, n, k, 1)
        count = mask.sum(2)  # (B or 1, n, 1)
        if self.pool == "mean":
            coarse = (groups * mask).sum(2) / count.clamp_min(1.0)
        else:  # the group's last valid element
            last = (count.long() - 1).clamp_min(0).expand(b, n, 1)
            coarse = groups.gather(2, last[..., None].expand(b, n, 1, d)).squeeze(2)
        clen = None if lengths is None else (lengths + k - 1) // k
        z = self._run(inner, coarse, clen)
        if self.up_mode == "cross-attn":
            last = torch.arange(t, device=x.device)
            last = (last + 1) // k - 1 if self.causal else torch.full_like(last, n - 1)
            allowed = torch.arange(n, device=x.device)[None, None] <= last[None, :, None]
            if clen is not None:  # never the padding steps of a shorter row
                allowed = allowed & (torch.arange(n, device=x.device) < clen[:, None])[:, None]
            return self._cross(x, z, allowed)
        if self.up_mode == "linear":  # row block i of W gives group position i
            fine = (z @ self.up.t()).view(b, n * k, d)
        else:
            fine = z.repeat_interleave(k, dim=1)
        if self.causal:  # delay k - 1: group j's step is first read where it completes
            fine = F.pad(fine, (0, 0, k - 1, 0))[:, : n * k]
        return fine[:, :t]

    def _chunked_step(
        self,
        x: torch.Tensor,
        inner: Callable,
        entry: dict | None,
        tokens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict]:
        b, t, d = x.shape
        e = entry or {
            "last": None,  # the previous position's x (router) or token id (split)
            "chunks": x.new_zeros(b, 0, d),  # (B, L, D) each row's chunks so far
            "p": x.new_zeros(b, 0),  # (B, L) their boundary probabilities
            "count": torch.zeros(b, dtype=torch.long, device=x.device),  # (B,)
        }
        if self.down == "router":
            xx = x if e["last"] is None else torch.cat([e["last"][:, None], x], 1)
            p = boundary_probs(xx, self.q, self.k)[:, xx.shape[1] - t :]
            starts, last = p >= 0.5, x[:, -1]
        else:
            assert tokens is not None, "the split rule needs the token ids"
            tt = tokens if e["last"] is None else torch.cat([e["last"][:, None], tokens], 1)
            starts = split_starts(tt)[:, tt.shape[1] - t :]
            p, last = starts.to(x.dtype), tokens[:, -1]
        # The rows' old chunks, then their new ones, packed again (ragged -> padded).
        old = torch.arange(e["chunks"].shape[1], device=x.device)[None] < e["count"][:, None]
        keep = torch.cat([old, starts], 1)
        chunks, count = select_padded(torch.cat([e["chunks"], x], 1), keep)
        probs = select_padded(torch.cat([e["p"], p], 1).unsqueeze(-1), keep)[0].squeeze(-1)
        z = self._run(inner, chunks, count)
        if self.up_mode == "ema":
            z = ema_smooth(z, probs)
        own = e["count"][:, None] + starts.long().cumsum(1) - 1  # (B, t): each one's chunk
        if self.up_mode == "cross-attn":
            allowed = torch.arange(z.shape[1], device=x.device)[None, None] <= own[..., None]
            fine = self._cross(x, z, allowed)
        else:
            fine = z.gather(1, own.unsqueeze(-1).expand(b, t, d))
        out = {"last": last, "chunks": chunks, "p": probs, "count": count}
        return x + fine, out

    def _chunked(
        self,
        x: torch.Tensor,
        inner: Inner,
        lengths: torch.Tensor | None,
        tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        b, t, d = x.shape
        if self.down == "router":
            p = boundary_probs(x, self.q, self.k)
            starts = p >= 0.5
        else:
            assert tokens is not None, "the split rule needs the token ids"
            starts = split_starts(tokens)
            p = starts.to(x.dtype)
        valid = torch.ones_like(starts)
        if lengths is not None:
            valid = torch.arange(t, device=x.device)[None] < lengths[:, None]
            starts = starts & valid
        chunks, clen = select_padded(x, starts)
        z = self._run(inner, chunks, clen)
        if self.up_mode == "ema":
            z = ema_smooth(z, select_padded(p.unsqueeze(-1), starts)[0].squeeze(-1))
        own = chunk_of(starts)  # (B, T): the chunk of each position
        if self.up_mode == "cross-attn":  # the chunks started at or before each position
            allowed = torch.arange(z.shape[1], device=x.device)[None, None] <= own[..., None]
            fine = self._cross(x, z, allowed)
        else:
            fine = z.gather(1, own.unsqueeze(-1).expand(b, t, d))
        selected = (starts & valid).sum() / valid.sum()
        self.stats_values = {"selected": selected.detach()}
        if self.down == "router":
            conf = torch.where(starts, p, 1.0 - p)
            fine = fine * (conf + (1.0 - conf).detach()).unsqueeze(-1)
            g = (p * valid).sum() / valid.sum()
            n = self.target
            ratio = n / (n - 1) * ((n - 1) * selected * g + (1 - selected) * (1 - g))
            self.stats_values["boundary_p"] = g.detach()
            self.aux_loss_value = self.weight * ratio if self.weight > 0 else None
        return fine
