"""The custom recurrent cell: a `cell` component's expressions, run over time.

The lowering (backends/torch/custom_cell.py) generates two plain functions from the
cell's checked expression trees and passes them in: `pre(p, x)` computes every
state-independent part for all steps at once (the hoisted input projections, the main
speed win), and `step(p, x_t, *pre_t, *state) -> (*new_state, y_t)` one step. Both read
parameters from `p` (this module) and work on any leading dims, so Newton mode applies
`step` to all steps at once. Like cells.py, this file uses torch alone: the standalone
emitter copies it into model.py (Newton mode then falls back to the exact loop).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class CustomCell(nn.Module):
    """A recurrence h_t = update(h_{t-1}, x_t), y_t = output(h_t, x_t) from generated code.

    `params`: (name, shape) of every parameter (initialised by the model's INIT table);
    `state`: (name, width) of each carried vector; `newton`: the Jacobian d h_t/d h_{t-1}
    is diagonal (each state entry's update reads only itself, elementwise), so mode
    "newton" (and "auto" on CUDA) solves all steps at once with archc's newton_scan.
    """

    def __init__(
        self,
        pre: Callable[..., tuple[torch.Tensor, ...]],
        step: Callable[..., tuple[torch.Tensor, ...]],
        params: tuple[tuple[str, tuple[int, ...]], ...],
        state: tuple[tuple[str, int], ...],
        mode: str = "auto",
        newton: bool = False,
        iters: int | None = None,
        tol: float | None = None,
    ) -> None:
        super().__init__()
        for name, shape in params:
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.pre, self.step_fn = pre, step
        self.state, self.mode, self.newton = state, mode, newton
        self.iters, self.tol = iters or 8, tol or 1e-6

    def forward(
        self,
        x: torch.Tensor,
        h0: tuple[torch.Tensor, ...] | None = None,
        lengths: torch.Tensor | None = None,
        exact: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x (B, T, D); h0: one (B, W) tensor per state entry, or None (zeros); lengths
        (B,) int64 of a right-padded batch (outputs past a length are 0, the carry is the
        one after step length-1). Returns (y (B, T, out), final carry)."""
        b, t = x.shape[0], x.shape[1]
        if h0 is None:
            h = tuple(x.new_zeros(b, w) for _, w in self.state)
        else:
            h = tuple(s.to(x.dtype) for s in h0)
        valid = None
        if lengths is not None:
            steps = torch.arange(t, device=x.device)
            valid = steps[None, :] < lengths.to(x.device)[:, None]  # (B, T)
        u = self.pre(self, x)  # the state-independent parts, (B, T, *) each
        # "auto": Newton where a parallel scan pays (CUDA); on CPU the loop is faster.
        use_newton = self.mode == "newton" or (self.mode == "auto" and x.is_cuda)
        if self.newton and use_newton and not exact and t > 1:
            try:
                from archc.backends.torch.scans.newton import newton_scan
            except ImportError:  # standalone model.py without archc: the loop is exact
                newton_scan = None
            if newton_scan is not None:
                return self._newton(newton_scan, x, u, h, valid)
        xs, us = x.unbind(1), [v.unbind(1) for v in u]  # unbind: O(T) backward, not O(T^2)
        ys = []
        for i in range(t):
            *new, y = self.step_fn(self, xs[i], *(v[i] for v in us), *h)
            if valid is not None:
                # Past its length a sequence keeps its carry and emits zeros.
                m = valid[:, i, None]
                new = [torch.where(m, n, o) for n, o in zip(new, h, strict=True)]
                y = torch.where(m, y, 0.0)
            h = tuple(new)
            ys.append(y)
        return torch.stack(ys, dim=1), h

    def _newton(
        self,
        newton_scan: Callable[..., tuple[torch.Tensor, object]],
        x: torch.Tensor,
        u: tuple[torch.Tensor, ...],
        h: tuple[torch.Tensor, ...],
        valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """All steps by Newton's method on the concatenated state (diagonal Jacobian)."""
        widths = [w for _, w in self.state]
        in_widths = [x.shape[-1], *(v.shape[-1] for v in u)]
        xin = torch.cat([x, *u], dim=-1)

        def f(h_prev: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
            ins = torch.split(xi, in_widths, dim=-1)
            *new, _y = self.step_fn(self, *ins, *torch.split(h_prev, widths, dim=-1))
            return torch.cat(new, dim=-1)

        h0 = torch.cat(h, dim=-1)
        hs, _info = newton_scan(f, None, xin, h0, iters=self.iters, tol=self.tol, jac="diag")
        # The outputs read the updated state: one vectorised step over all t.
        prev = torch.cat([h0[:, None], hs[:, :-1]], dim=1)
        *_, y = self.step_fn(self, x, *u, *torch.split(prev, widths, dim=-1))
        if valid is None:
            final = hs[:, -1]
        else:
            y = torch.where(valid[..., None], y, 0.0)
            # The carry after step length-1 (h0 for an empty sequence).
            last = (valid.sum(dim=1) - 1).clamp_min(0)
            final = hs[torch.arange(hs.shape[0], device=hs.device), last]
            final = torch.where(valid.any(dim=1)[:, None], final, h0)
        return y, tuple(torch.split(final, widths, dim=-1))
