"""Tanh RNNs with structured recurrent weights, solvable by Newton's method (ParaRNN).

`DiagRNN`: h_t = tanh(W x_t + u * h_{t-1} + b), u (H,) per unit; `BlockRNN`: the same
with U = blockdiag(u_1..u_N), u (N, k, k), N k = H. Their Jacobians d h_t / d h_{t-1}
are diagonal / block-diagonal, so mode "newton" (and "auto" on CUDA) solves all T steps
at once: each Newton iteration is one parallel linear scan (archc's newton_scan, with
jac="diag" or "blockdiag"). Mode "sequential", `exact=True` (streaming) and a model.py
without archc run the exact loop. The input projection W x + b is dense and computed
once for all steps, outside the solver.

Varlen: `lengths` (B,) int64 for right-padded batches; outputs at t >= length are zero
and the final carry is the carry after step length-1 (updates past the length are the
identity, so its Jacobian there is I and Newton stays exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.cells import valid_steps, zero_past


class _StructuredRNN(nn.Module):
    """Shared forward of DiagRNN / BlockRNN; subclasses define `_recur(h)` (U h) and
    `_jac(pre_act_derivative)`."""

    weight_ih: nn.Parameter
    weight_hh: nn.Parameter
    bias: nn.Parameter | None
    hidden: int
    mode: str
    iters: int
    tol: float

    def _recur(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _jac(self, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _newton_kind(self) -> tuple[str, int | None]:
        raise NotImplementedError

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
        # (B, T, 1): 1 inside the length, 0 past it (where the update is the identity).
        m = torch.ones_like(u[..., :1]) if valid is None else valid[..., None].to(u.dtype)
        if not exact and (self.mode == "newton" or (self.mode == "auto" and x.is_cuda)):
            try:
                from archc.backends.torch.scans.newton import newton_scan
            except ImportError:  # standalone model.py without archc: the loop is exact
                newton_scan = None
            if newton_scan is not None:
                hid = self.hidden

                def step(hp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                    new = torch.tanh(xm[..., :hid] + self._recur(hp))
                    return hp + xm[..., hid:] * (new - hp)  # identity past the length

                def jacobian(hp: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
                    new = torch.tanh(xm[..., :hid] + self._recur(hp))
                    return self._jac(1.0 - new * new, xm[..., hid:])

                jac, block = self._newton_kind()
                y, _ = newton_scan(
                    step,
                    jacobian,
                    torch.cat([u, m], dim=-1),
                    h,
                    iters=self.iters,
                    tol=self.tol,
                    jac=jac,
                    block=block,
                )
                # Past its length a sequence's state is carried unchanged: y[:, -1] is it.
                return zero_past(y, valid), y[:, -1]
        outs = []
        # unbind, not u[:, t]: slicing makes the backward O(T^2) in memory traffic.
        for ut, mt in zip(u.unbind(1), m.unbind(1), strict=True):
            h = h + mt * (torch.tanh(ut + self._recur(h)) - h)
            outs.append(h)
        return zero_past(torch.stack(outs, dim=1), valid), h


class DiagRNN(_StructuredRNN):
    """Diagonal tanh RNN h_t = tanh(W x_t + u * h_{t-1} + b), u (H,) (ParaRNN)."""

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
        self.weight_ih = nn.Parameter(torch.empty(hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(hidden))
        self.bias = nn.Parameter(torch.empty(hidden)) if bias else None
        self.hidden, self.mode, self.iters, self.tol = hidden, mode, iters, tol

    def _recur(self, h: torch.Tensor) -> torch.Tensor:
        return self.weight_hh * h

    def _jac(self, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # d step / d h = m * diag(d * u) + (1 - m): the identity past the length.
        return 1.0 + m * (d * self.weight_hh - 1.0)

    def _newton_kind(self) -> tuple[str, int | None]:
        return "diag", None


class BlockRNN(_StructuredRNN):
    """Block-diagonal tanh RNN h_t = tanh(W x_t + blockdiag(U) h_{t-1} + b), U (N, k, k)."""

    def __init__(
        self,
        d_in: int,
        hidden: int,
        block: int,
        bias: bool = True,
        mode: str = "auto",
        iters: int = 8,
        tol: float = 1e-6,
    ) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(hidden // block, block, block))
        self.bias = nn.Parameter(torch.empty(hidden)) if bias else None
        self.hidden, self.block = hidden, block
        self.mode, self.iters, self.tol = mode, iters, tol

    def _recur(self, h: torch.Tensor) -> torch.Tensor:
        n, k = self.weight_hh.shape[0], self.block
        hb = h.unflatten(-1, (n, k)).unsqueeze(-1)  # (..., N, k, 1)
        return (self.weight_hh @ hb).squeeze(-1).flatten(-2)

    def _jac(self, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # Blocks diag(d) U inside the length, I past it: (..., N, k, k) as [row, col].
        n, k = self.weight_hh.shape[0], self.block
        blocks = d.unflatten(-1, (n, k)).unsqueeze(-1) * self.weight_hh
        eye = torch.eye(k, dtype=d.dtype, device=d.device)
        mb = m.unsqueeze(-1).unsqueeze(-1)  # (..., 1, 1, 1)
        return eye + mb * (blocks - eye)

    def _newton_kind(self) -> tuple[str, int | None]:
        return "blockdiag", self.block
