"""Diagonal LSTM (ParaLSTM, Danieli et al. 2025), solvable by Newton's method.

An LSTM whose recurrent weights are per-unit vectors (the input projection stays
dense and runs once for all steps): with gates in nn.LSTM's order [i, f, g, o],

    i = sigmoid(x_i + u_i h + b_i), f = sigmoid(x_f + u_f h + b_f),
    g = tanh(x_g + u_g h + b_g),    o = sigmoid(x_o + u_o h + b_o),
    c_t = f c_{t-1} + i g,          h_t = o tanh(c_t).

Unit j's new (c_j, h_j) depends only on its own old (c_j, h_j), so the Jacobian
d (c_t, h_t) / d (c_{t-1}, h_{t-1}) is block-diagonal with 2 x 2 blocks. Mode "newton"
(and "auto" on CUDA) solves all T steps at once with archc's newton_scan
(jac="blockdiag", block 2: each Newton iteration is one parallel 2 x 2 block scan);
mode "sequential", `exact=True` (streaming) and a model.py without archc run the exact
loop. The carry is (B, H, 2): [..., 0] the cell c, [..., 1] the output h (the Newton
state is that tensor flattened, pairs (c_j, h_j) adjacent).

Varlen: `lengths` (B,) int64 for right-padded batches; outputs at t >= length are zero
and the final carry is the carry after step length-1 (the update past the length is
the identity, Jacobian I, so Newton stays exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.cells import newton_solver, step_mask, valid_steps, zero_past


class DiagLSTM(nn.Module):
    """ParaLSTM: weight_ih (4H, D) dense, weight_hh (4, H) per-unit recurrent weights,
    bias (4H,); gates [i, f, g, o]."""

    def __init__(
        self,
        d_in: int,
        hidden: int,
        bias: bool = True,
        mode: str = "auto",
        iters: int = 8,
        tol: float = 1e-6,
    ) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(4, hidden))
        self.bias = nn.Parameter(torch.empty(4 * hidden)) if bias else None
        self.hidden, self.mode, self.iters, self.tol = hidden, mode, iters, tol

    def _gates(
        self, xp: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(i, f, g, o), each (..., H), from pre-projected inputs xp (..., 4H) and h."""
        u = self.weight_hh
        xi, xf, xg, xo = xp.chunk(4, dim=-1)
        i = torch.sigmoid(xi + u[0] * h)
        f = torch.sigmoid(xf + u[1] * h)
        g = torch.tanh(xg + u[2] * h)
        o = torch.sigmoid(xo + u[3] * h)
        return i, f, g, o

    def cell(
        self, xp: torch.Tensor, c: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: (c_t, h_t) from xp (..., 4H) (W x + b) and (c_{t-1}, h_{t-1})."""
        i, f, g, o = self._gates(xp, h)
        c_new = f * c + i * g
        return c_new, o * torch.tanh(c_new)

    def blocks(self, xp: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(..., H, 2, 2) Jacobian blocks d (c_t, h_t) / d (c_{t-1}, h_{t-1}) as [row, col]."""
        return self.cell_and_blocks(xp, c, h)[2]

    def cell_and_blocks(
        self, xp: torch.Tensor, c: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_t, h_t, Jacobian blocks) with the gates computed once (Newton needs both)."""
        u = self.weight_hh
        i, f, g, o = self._gates(xp, h)
        c_new = f * c + i * g
        tc = torch.tanh(c_new)
        dcdc = f
        dcdh = c * f * (1 - f) * u[1] + g * i * (1 - i) * u[0] + i * (1 - g * g) * u[2]
        dtc = o * (1 - tc * tc)  # d h_t / d c_t
        dhdc = dtc * dcdc
        dhdh = o * (1 - o) * u[3] * tc + dtc * dcdh
        j = torch.stack([torch.stack([dcdc, dcdh], -1), torch.stack([dhdc, dhdh], -1)], -2)
        return c_new, o * tc, j

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        exact: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H, 2) [c, h] or None -> (y (B, T, H), carry (B, H, 2))."""
        xp = F.linear(x, self.weight_ih, self.bias)  # (B, T, 4H): every step's input part
        hid = self.hidden
        s = xp.new_zeros(x.shape[0], hid, 2) if h0 is None else h0.to(xp.dtype)
        valid = valid_steps(x, lengths)
        m = step_mask(valid, xp)  # (B, T, 1)
        newton_scan = newton_solver(self.mode, exact, x)
        if newton_scan is not None:

            def step(sp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                sp2 = sp.unflatten(-1, (hid, 2))
                c, h = self.cell(xm[..., :-1], sp2[..., 0], sp2[..., 1])
                new = torch.stack([c, h], -1).flatten(-2)
                return sp + xm[..., -1:] * (new - sp)  # identity past the length

            def step_jac(sp: torch.Tensor, xm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                sp2 = sp.unflatten(-1, (hid, 2))
                c, h, j = self.cell_and_blocks(xm[..., :-1], sp2[..., 0], sp2[..., 1])
                mt = xm[..., -1:]
                new = torch.stack([c, h], -1).flatten(-2)
                eye = torch.eye(2, dtype=j.dtype, device=j.device)
                # Past the length: the identity step, Jacobian I.
                return sp + mt * (new - sp), eye + mt[..., None, None] * (j - eye)

            def jacobian(sp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                return step_jac(sp, xm)[1]

            y, _ = newton_scan(
                step,
                jacobian,
                torch.cat([xp, m], dim=-1),
                s.flatten(-2),
                iters=self.iters,
                tol=self.tol,
                jac="blockdiag",
                block=2,
                step_jac=step_jac,
            )
            y = y.unflatten(-1, (hid, 2))
            # Past its length a sequence's state is carried unchanged: y[:, -1] is it.
            return zero_past(y[..., 1], valid), y[:, -1]
        c, h = s[..., 0], s[..., 1]
        outs = []
        # unbind, not xp[:, t]: slicing makes the backward O(T^2) in memory traffic.
        for xt, mt in zip(xp.unbind(1), m.unbind(1), strict=True):
            c_new, h_new = self.cell(xt, c, h)
            c, h = c + mt * (c_new - c), h + mt * (h_new - h)
            outs.append(h)
        return zero_past(torch.stack(outs, dim=1), valid), torch.stack([c, h], -1)
