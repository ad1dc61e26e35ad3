"""The 1-D pLSTM cell (Pöppel et al. 2025, "pLSTM: parallelizable Linear Source
Transition Mark networks") of the `scan` op.

Like the cells of cells.py it maps (B, T, D) and an optional initial carry to (y, final
carry), and the standalone emitter copies the class verbatim into model.py, so it uses
math/torch/nn/F and cells.py's helpers (also emitted) only. Its "chunked" and "auto"
modes import archc's plstm_scan lazily; without archc the step loop in the class runs
instead (the same recurrence, exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.cells import _heads, valid_steps, zero_past


class PLSTM(nn.Module):
    """pLSTM layer, 1-D case, width D, `heads` heads with key width dk and value width
    dv = D / heads. Per head, with scalar gates computed from x_t:
    source S_t = sigmoid(W_s x + b_s), transition T_t = tanh(W_t x + b_t) (P-mode: signed,
    |T_t| < 1, so the state stays bounded at any length), mark M_t = sigmoid(W_m x + b_m);
    q = W_q x / sqrt(dk), k = W_k x, v = W_v x;
    C_t = T_t C_{t-1} + S_t k_t^T v_t (C: (dk, dv)), o_t = M_t q_t C_t,
    y = W_o concat_heads(o). `lengths` (B,) marks right-padded batches: steps at
    t >= length leave C alone (T = 1, S = 0) and output 0.
    """

    def __init__(
        self, dim: int, heads: int, key_dim: int, mode: str = "auto", chunk: int = 64
    ) -> None:
        super().__init__()
        self.weight_q = nn.Parameter(torch.empty(heads * key_dim, dim))
        self.weight_k = nn.Parameter(torch.empty(heads * key_dim, dim))
        self.weight_v = nn.Parameter(torch.empty(dim, dim))
        self.weight_s = nn.Parameter(torch.empty(heads, dim))
        self.bias_s = nn.Parameter(torch.empty(heads))
        self.weight_t = nn.Parameter(torch.empty(heads, dim))
        self.bias_t = nn.Parameter(torch.empty(heads))
        self.weight_m = nn.Parameter(torch.empty(heads, dim))
        self.bias_m = nn.Parameter(torch.empty(heads))
        self.weight_o = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.key_dim, self.mode, self.chunk = heads, key_dim, mode, chunk

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> source, transition, mark, each (B, H, T)."""
        s = torch.sigmoid(F.linear(x, self.weight_s, self.bias_s)).transpose(1, 2)
        t = torch.tanh(F.linear(x, self.weight_t, self.bias_t)).transpose(1, 2)
        m = torch.sigmoid(F.linear(x, self.weight_m, self.bias_m)).transpose(1, 2)
        return s, t, m

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H, dk, dv) or None, lengths (B,) or None -> (y (B, T, D),
        C_T (B, H, dk, dv))."""
        n = self.heads
        q = _heads(F.linear(x, self.weight_q), n) * self.key_dim**-0.5
        k = _heads(F.linear(x, self.weight_k), n)
        v = _heads(F.linear(x, self.weight_v), n)
        src, trans, mark = self.gates(x)
        valid = valid_steps(x, lengths)
        if valid is not None:
            src = torch.where(valid[:, None], src, 0.0)
            trans = torch.where(valid[:, None], trans, 1.0)
        k = k * src.unsqueeze(-1)
        o, C = self._scan(q, k, v, trans, h0)
        o = o * mark.unsqueeze(-1)
        return zero_past(F.linear(o.transpose(1, 2).flatten(2), self.weight_o), valid), C

    def _scan(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        trans: torch.Tensor,
        h0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode != "sequential":
            try:
                from archc.backends.torch.scans.plstm import plstm_scan
            except ImportError:  # standalone model.py without archc: the loop below is exact
                plstm_scan = None
            if plstm_scan is not None:
                return plstm_scan(q, k, v, trans, h0, mode=self.mode, chunk=self.chunk)
        B, H, T, dk = q.shape
        C = q.new_zeros(B, H, dk, v.shape[-1]) if h0 is None else h0.to(q.dtype)
        outs = []
        for t in range(T):
            C = trans[:, :, t, None, None] * C + k[:, :, t, :, None] * v[:, :, t, None, :]
            outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], C))
        o = torch.stack(outs, dim=2) if outs else v.new_zeros(B, H, 0, v.shape[-1])
        return o, C
