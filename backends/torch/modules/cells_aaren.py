"""The Aaren cell (Feng et al. 2024, "Attention as an RNN") of the `scan` op.

Like the cells of cells.py it maps (B, T, D) and an optional initial carry to (y, final
carry), and the standalone emitter copies the class verbatim into model.py, so it uses
math/torch/nn/F only. Its "associative" and "auto" modes import archc's aaren_scan
lazily; without archc (a standalone model.py) the step loop in the class runs instead:
the same recurrence, exact, only slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Aaren(nn.Module):
    """Aaren layer, width D, `heads` heads of width d = D / heads: per head a learned
    query q (not input-dependent), k = W_k x, v = W_v x, s_t = q . k_t / sqrt(d),
    o_t = sum_{i<=t} softmax_i(s) v_i, y = W_o concat_heads(o).

    The softmax is kept as a running (m, u, w): m the max score so far, u = sum
    exp(s_i - m) v_i, w = sum exp(s_i - m); o_t = u_t / w_t. The carry packs it per head
    as (B, H, d + 2) = [u | m | w] in float32 or wider. `lengths` (B,) (each in 1..T)
    marks right-padded batches: steps at t >= length leave the carry alone and output 0.
    """

    def __init__(self, dim: int, heads: int, mode: str = "auto") -> None:
        super().__init__()
        self.weight_k = nn.Parameter(torch.empty(dim, dim))
        self.weight_v = nn.Parameter(torch.empty(dim, dim))
        self.query = nn.Parameter(torch.empty(heads, dim // heads))
        self.weight_o = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.mode = heads, mode

    def _scan(
        self, s: torch.Tensor, v: torch.Tensor, carry: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """s (B, H, T) float32+, v (B, H, T, d), carry (m, u, w) or None -> (o, carry)."""
        if self.mode != "sequential":
            try:
                from archc.backends.torch.scans.associative import aaren_scan
            except ImportError:  # standalone model.py without archc: the loop is exact
                aaren_scan = None
            if aaren_scan is not None:
                return aaren_scan(s, v, carry, mode=self.mode)
        B, H, _, d = v.shape
        vv = v.to(s.dtype)
        if carry is None:
            m = s.new_full((B, H), float("-inf"))
            u, w = vv.new_zeros(B, H, d), s.new_zeros(B, H)
        else:
            m, u, w = carry
        outs = []
        for st, vt in zip(s.unbind(2), vv.unbind(2), strict=True):
            m_new = torch.maximum(m, st)
            # Shift by 0 where nothing was seen yet (m_new = -inf): exp(-inf - 0) = 0,
            # where exp(-inf - (-inf)) would be NaN.
            shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            a, b = torch.exp(m - shift), torch.exp(st - shift)
            u = u * a[..., None] + vt * b[..., None]
            w = w * a + b
            m = m_new
            pos = w > 0
            div = torch.where(pos, w, torch.ones_like(w))[..., None]
            outs.append(torch.where(pos[..., None], u / div, 0.0))
        o = torch.stack(outs, dim=2) if outs else vv.new_zeros(B, H, 0, d)
        return o.to(v.dtype), (m, u, w)

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H, d + 2) or None, lengths (B,) int or None ->
        (y (B, T, D), carry (B, H, d + 2))."""
        T, D = x.shape[1], x.shape[2]
        n, d = self.heads, D // self.heads
        valid = None
        if lengths is not None:
            valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
            # Padding never matters, even NaN: zeroed here, skipped by the scan below.
            x = torch.where(valid[..., None], x, 0.0)
        k = F.linear(x, self.weight_k).unflatten(-1, (n, d)).transpose(1, 2)  # (B, H, T, d)
        v = F.linear(x, self.weight_v).unflatten(-1, (n, d)).transpose(1, 2)
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax sums in fp32 or wider
        s = torch.einsum("bhtd,hd->bht", k, self.query).to(acc) * d**-0.5
        if valid is not None:
            s = torch.where(valid[:, None, :], s, float("-inf"))  # identity steps
        carry = None
        if h0 is not None:
            h = h0.to(acc)
            carry = (h[..., d], h[..., :d], h[..., d + 1])
        o, (m, u, w) = self._scan(s, v, carry)
        if valid is not None:
            o = torch.where(valid[:, None, :, None], o, 0.0)
        y = F.linear(o.transpose(1, 2).flatten(2), self.weight_o)
        return y, torch.cat([u, m[..., None], w[..., None]], dim=-1)
