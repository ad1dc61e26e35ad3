"""Tanh RNNs with structured recurrent weights, solvable by Newton's method (ParaRNN).

`StructuredRNN`: h_t = tanh(W x_t + U h_{t-1} + b) with U diagonal (block=None: u (H,)
per unit) or block-diagonal (U = blockdiag(u_1..u_N), u (N, k, k), N k = H). Its
Jacobian d h_t / d h_{t-1} is then diagonal / block-diagonal, so mode "newton" (and
"auto" on CUDA) solves all T steps at once: each Newton iteration is one parallel
linear scan (archc's newton_scan, with jac="diag" or "blockdiag"). Mode "sequential",
`exact=True` (streaming) and a model.py without archc run the exact loop. The input
projection W x + b is dense and computed once for all steps, outside the solver.

Varlen: `lengths` (B,) int64 for right-padded batches; outputs at t >= length are zero
and the final carry is the carry after step length-1 (updates past the length are the
identity, so its Jacobian there is I and Newton stays exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.cells import newton_solver, step_mask, valid_steps, zero_past


class StructuredRNN(nn.Module):
    """Tanh RNN with diagonal (`block` None) or k x k block-diagonal recurrent weights
    `weight_hh`: (H,) or (H/k, k, k)."""

    def __init__(
        self,
        d_in: int,
        hidden: int,
        block: int | None = None,
        bias: bool = True,
        mode: str = "auto",
        iters: int = 8,
        tol: float = 1e-6,
    ) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden, d_in))
        hh = (hidden,) if block is None else (hidden // block, block, block)
        self.weight_hh = nn.Parameter(torch.empty(hh))
        self.bias = nn.Parameter(torch.empty(hidden)) if bias else None
        self.hidden, self.block = hidden, block
        self.mode, self.iters, self.tol = mode, iters, tol

    def _recur(self, h: torch.Tensor) -> torch.Tensor:
        """U h for states h (..., H)."""
        if self.block is None:
            return self.weight_hh * h
        hb = h.unflatten(-1, (-1, self.block)).unsqueeze(-1)  # (..., N, k, 1)
        return (self.weight_hh @ hb).squeeze(-1).flatten(-2)

    def _jac(self, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """d step / d h from tanh' = d (..., H) and the step mask m (..., 1): diag(d) U
        inside the length, the identity past it. Diagonal: (..., H); block: (..., N, k, k)
        as [row, col]."""
        if self.block is None:
            return 1.0 + m * (d * self.weight_hh - 1.0)
        blocks = d.unflatten(-1, (-1, self.block)).unsqueeze(-1) * self.weight_hh
        eye = torch.eye(self.block, dtype=d.dtype, device=d.device)
        return eye + m[..., None, None] * (blocks - eye)

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        exact: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None -> (y (B, T, H), h_T (B, H))."""
        u = F.linear(x, self.weight_ih, self.bias)  # the input part of every step at once
        h = u.new_zeros(x.shape[0], self.hidden) if h0 is None else h0.to(u.dtype)
        valid = valid_steps(x, lengths)
        m = step_mask(valid, u)  # (B, T, 1)
        newton_scan = newton_solver(self.mode, exact, x)
        if newton_scan is not None:
            hid = self.hidden

            def step(hp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                new = torch.tanh(xm[..., :hid] + self._recur(hp))
                return hp + xm[..., hid:] * (new - hp)  # identity past the length

            def jacobian(hp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                new = torch.tanh(xm[..., :hid] + self._recur(hp))
                return self._jac(1.0 - new * new, xm[..., hid:])

            y, _ = newton_scan(
                step,
                jacobian,
                torch.cat([u, m], dim=-1),
                h,
                iters=self.iters,
                tol=self.tol,
                jac="diag" if self.block is None else "blockdiag",
                block=self.block,
            )
            # Past its length a sequence's state is carried unchanged: y[:, -1] is it.
            return zero_past(y, valid), y[:, -1]
        outs = []
        # unbind, not u[:, t]: slicing makes the backward O(T^2) in memory traffic.
        for ut, mt in zip(u.unbind(1), m.unbind(1), strict=True):
            h = h + mt * (torch.tanh(ut + self._recur(h)) - h)
            outs.append(h)
        return zero_past(torch.stack(outs, dim=1), valid), h
