"""Recurrent cells of the `scan` op beyond torch.nn's LSTM/GRU/RNN.

Every cell maps (B, T, D_in) and an optional initial carry to (y, final carry), like
nn.RNN with batch_first=True, so the torch lowering calls them the same way in full and
in incremental (chunk by chunk) runs. Carries: (B, H) for the leaky RNN, minGRU and
minLSTM; (B, D, N) for S4D and selective SSMs; (B, D, N, 2) real/imaginary pairs for the
LRU; (B, heads, dk, dv) matrices for GLA and DeltaNet.

The standalone emitter copies these definitions verbatim into model.py, so they use
math/torch/nn/F only. The exceptions are `diag_scan` and `matrix_scan`: `diag_scan` imports archc's
`linear_scan` lazily for the associative/chunked/auto modes and, when archc is not
importable (a standalone model.py on its own), falls back to the sequential loop: the
same recurrence, exact, only slower. `matrix_scan` does the same with archc's chunked
gla_scan / delta_scan. `DiagGRU` likewise imports archc's `newton_scan` lazily for
its newton/auto modes and otherwise runs its exact loop.

Variable-length batches: every cell's forward takes `lengths`, an int64 tensor (B,) of
right-padded sequence lengths, each in 1..T (None: every sequence has all T steps).
Outputs at steps t >= length are exactly zero, and the final carry is the carry after
step length-1: what running that sequence alone would return. Padded steps are made
the identity update in a form every mode honours (sequential, associative, chunked,
newton): a = 1, b = 0 for the diagonal linear cells (dt = 0 for the selective SSM);
log-decay 0 and k = 0 for GLA; beta = 0 for DeltaNet; z = 0 for the diagonal GRU (the
step is then exactly h, its Jacobian exactly 1, so Newton stays exact); torch.where
in the loops. Padded inputs get zero gradients. `rnn_forward` gives torch.nn's
LSTM/GRU/RNN the same interface through packed sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.fused import fused_leaky_rnn


def valid_steps(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) bool, True at the steps t < lengths[b] of x (B, T, ...); None without lengths."""
    if lengths is None:
        return None
    t = torch.arange(x.shape[1], device=x.device)
    return t[None, :] < lengths.to(x.device)[:, None]


def over_time(valid: torch.Tensor, like: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The (B, T) mask `valid` shaped to broadcast against `like`, time at `dim`."""
    shape = [1] * like.dim()
    shape[0], shape[dim] = valid.shape[0], valid.shape[1]
    return valid.view(shape)


def zero_past(y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """y (B, T, ...) with every step past its sequence's length set to exactly 0."""
    if valid is None:
        return y
    return torch.where(over_time(valid, y), y, 0.0)


def step_mask(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, T, 1) in like's dtype: 1 inside each sequence's length, 0 past it (where a
    Newton-solvable cell makes its update the identity); like is (B, T, ...)."""
    if valid is None:
        return torch.ones_like(like[..., :1])
    return valid[..., None].to(like.dtype)


def newton_solver(
    mode: str, exact: bool, x: torch.Tensor
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """archc's newton_scan when a Newton-solvable cell should use it (mode "newton", or
    "auto" on CUDA, and not `exact`), else None: run the exact loop. Also None in a
    standalone model.py, where archc is not importable (the loop is exact)."""
    if exact or not (mode == "newton" or (mode == "auto" and x.is_cuda)):
        return None
    try:
        from archc.backends.torch.scans.newton import newton_scan
    except ImportError:  # standalone model.py without archc: the loop is exact
        return None
    return newton_scan


def rnn_forward(
    mod: nn.Module,
    x: torch.Tensor,
    h0: object = None,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, object]:
    """Run torch.nn's LSTM/GRU/RNN (batch_first) on x (B, T, D) with the cells' varlen
    convention: with `lengths` (B,) the batch runs packed, so outputs past each length
    are 0 and the final carry is each sequence's own (after step length-1)."""
    if lengths is None:
        return mod(x, h0)
    # pack_padded_sequence wants the lengths on the CPU; enforce_sorted=False lets the
    # module permute h0 and the final carry itself, so callers keep their batch order.
    packed = nn.utils.rnn.pack_padded_sequence(
        x, lengths.cpu(), batch_first=True, enforce_sorted=False
    )
    out, hn = mod(packed, h0)
    y, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return y, hn


def diag_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    mode: str,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solve h_t = a_t * h_{t-1} + b_t along dim 1.

    a broadcasts to b (B, T, *F); h0 is (B, *F) or None (zeros); valid (B, T) bool or
    None: steps where it is False become the identity (a = 1, b = 0), so h stays at the
    last valid state. Returns h (B, T, *F). mode "sequential" is a Python loop over T;
    the others go to archc's linear_scan.
    """
    if valid is not None:
        m = over_time(valid, b)
        a, b = torch.where(m, a.expand_as(b), 1.0), torch.where(m, b, 0.0)
    if mode != "sequential":
        try:
            from archc.backends.torch.scans.linear import linear_scan
        except ImportError:  # standalone model.py without archc: the loop below is exact
            linear_scan = None
        if linear_scan is not None:
            return linear_scan(a.expand_as(b).contiguous(), b, h0, mode=mode)
    a = a.expand_as(b)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(b.dtype)
    outs = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        outs.append(h)
    return torch.stack(outs, dim=1)


class LeakyRNN(nn.Module):
    """Leaky (tau) RNN: h_t = (1 - 1/tau) h_{t-1} + (1/tau) act(W_ih x_t + W_hh h_{t-1} + b).

    tau = 1 + softplus(tau_raw) per unit: always >= 1 (so the update is a convex mix)
    while every value of tau_raw still passes a gradient, unlike a hard clamp.
    """

    def __init__(self, d_in: int, hidden: int, bias: bool = True, nonlinearity: str = "tanh"):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(hidden, hidden))
        self.bias = nn.Parameter(torch.empty(hidden)) if bias else None
        self.tau_raw = nn.Parameter(torch.empty(hidden))
        self.hidden, self.nonlinearity = hidden, nonlinearity

    def tau(self) -> torch.Tensor:
        """Per-unit time constants (H,), each >= 1."""
        return 1.0 + F.softplus(self.tau_raw)

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None, lengths (B,) or None -> (y (B, T, H), h_T (B, H))."""
        # On CUDA the persistent Triton cell when it applies (it has no varlen form).
        if lengths is None and (out := fused_leaky_rnn(self, x, h0)) is not None:
            return out
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        u = F.linear(x, self.weight_ih, self.bias)  # the input part of every step at once
        alpha = 1.0 / self.tau()
        h = x.new_zeros(x.shape[0], self.hidden) if h0 is None else h0
        valid = valid_steps(x, lengths)
        outs = []
        for t in range(x.shape[1]):
            new = h + alpha * (act(u[:, t] + F.linear(h, self.weight_hh)) - h)
            h = new if valid is None else torch.where(valid[:, t, None], new, h)
            outs.append(h)
        return zero_past(torch.stack(outs, dim=1), valid), h


class MinGRU(nn.Module):
    """minGRU (Feng et al. 2024), plain (not log-space) variant:
    z = sigmoid(W_z x), h~ = W_h x, h_t = (1 - z) h_{t-1} + z h~."""

    def __init__(self, d_in: int, hidden: int, bias: bool = True, mode: str = "auto") -> None:
        super().__init__()
        self.weight_z = nn.Parameter(torch.empty(hidden, d_in))
        self.bias_z = nn.Parameter(torch.empty(hidden)) if bias else None
        self.weight_h = nn.Parameter(torch.empty(hidden, d_in))
        self.bias_h = nn.Parameter(torch.empty(hidden)) if bias else None
        self.mode = mode

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None, lengths (B,) or None -> (y (B, T, H), h_T (B, H))."""
        z = torch.sigmoid(F.linear(x, self.weight_z, self.bias_z))
        cand = F.linear(x, self.weight_h, self.bias_h)
        valid = valid_steps(x, lengths)
        h = diag_scan(1.0 - z, z * cand, h0, self.mode, valid)
        return zero_past(h, valid), h[:, -1]


class MinLSTM(nn.Module):
    """minLSTM (Feng et al. 2024): f, i = sigmoid(W_f x), sigmoid(W_i x), normalised to
    f / (f + i) and i / (f + i); h~ = W_h x; h_t = f' h_{t-1} + i' h~."""

    def __init__(self, d_in: int, hidden: int, bias: bool = True, mode: str = "auto") -> None:
        super().__init__()
        for g in ("f", "i", "h"):
            setattr(self, f"weight_{g}", nn.Parameter(torch.empty(hidden, d_in)))
            setattr(self, f"bias_{g}", nn.Parameter(torch.empty(hidden)) if bias else None)
        self.mode = mode

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None, lengths (B,) or None -> (y (B, T, H), h_T (B, H))."""
        f = torch.sigmoid(F.linear(x, self.weight_f, self.bias_f))
        i = torch.sigmoid(F.linear(x, self.weight_i, self.bias_i))
        cand = F.linear(x, self.weight_h, self.bias_h)
        s = f + i  # > 0: both are sigmoids
        valid = valid_steps(x, lengths)
        h = diag_scan(f / s, (i / s) * cand, h0, self.mode, valid)
        return zero_past(h, valid), h[:, -1]


class DiagGRU(nn.Module):
    """Diagonal GRU (ParaRNN, Danieli et al.): the input projection W x + b (3H, D) is
    dense and runs once over all steps; the recurrent weights u (3, H) are per unit:
    z = sigmoid(xz + uz h), r = sigmoid(xr + ur h), c = tanh(xc + uc (r h)),
    h_t = (1 - z) h_{t-1} + z c. Its Jacobian d h_t / d h_{t-1} is diagonal, so mode
    "newton" (and "auto" on CUDA) solves all steps at once by Newton's method (archc's
    newton_scan: each iteration one parallel linear scan, implicit-adjoint backward, a
    logged fallback to the exact loop when `iters` runs out before `tol`). Mode
    "sequential", `exact=True` (streaming) and a model.py without archc run the exact loop.
    """

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
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(3, hidden))
        self.bias = nn.Parameter(torch.empty(3 * hidden)) if bias else None
        self.hidden, self.mode, self.iters, self.tol = hidden, mode, iters, tol

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        exact: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) or None, lengths (B,) or None -> (y (B, T, H), h_T (B, H))."""
        xp = F.linear(x, self.weight_ih)  # (B, T, 3H): the input part of every step
        valid = valid_steps(x, lengths)
        if valid is not None:
            # z pre-activation -inf past the length: z = sigmoid(-inf) = 0 exactly, so the
            # step is h itself and its Jacobian 1 (the loop and Newton both honour it).
            gate = torch.arange(xp.shape[-1], device=x.device) < self.hidden
            xp = torch.where(gate & ~valid[..., None], float("-inf"), xp)
        h = xp.new_zeros(x.shape[0], self.hidden) if h0 is None else h0.to(xp.dtype)
        u = self.weight_hh
        b = u.new_zeros(3, self.hidden) if self.bias is None else self.bias.view(3, -1)
        # "auto": Newton where a parallel scan pays (CUDA); on CPU the exact loop is
        # faster (archc bench scan: Newton 2.5x slower at T=4096 on 2 threads).
        if not exact and (self.mode == "newton" or (self.mode == "auto" and x.is_cuda)):
            try:
                from archc.backends.torch.scans.newton import (
                    DiagGRUParams,
                    diag_gru_step,
                    diag_gru_step_jac,
                    newton_scan,
                )
            except ImportError:  # standalone model.py without archc: the loop is exact
                newton_scan = None
            if newton_scan is not None:
                p = DiagGRUParams(self.weight_ih, u, b)
                step, jac = diag_gru_step(p)
                y, _ = newton_scan(
                    step, jac, xp, h, iters=self.iters, tol=self.tol, step_jac=diag_gru_step_jac(p)
                )
                return zero_past(y, valid), y[:, -1]
        xz, xr, xc = xp.chunk(3, dim=-1)
        outs = []
        # unbind, not xz[:, t]: slicing makes the backward O(T^2) in memory traffic.
        for zt, rt, ct in zip(xz.unbind(1), xr.unbind(1), xc.unbind(1), strict=True):
            z = torch.sigmoid(zt + u[0] * h + b[0])
            r = torch.sigmoid(rt + u[1] * h + b[1])
            c = torch.tanh(ct + u[2] * (r * h) + b[2])
            h = h + z * (c - h)
            outs.append(h)
        return zero_past(torch.stack(outs, dim=1), valid), h


class S4D(nn.Module):
    """Diagonal real SSM (S4D-Real) over D channels with N states each.

    A = -exp(A_log) (D, N), dt = exp(log_dt) (D,); discretised by zero-order hold
    (Abar = exp(dt A), Bbar = (Abar - 1) / A * B) or bilinear ((1 + dt A/2) / (1 - dt A/2),
    dt B / (1 - dt A/2)); h_t = Abar h_{t-1} + Bbar x_t, y_t = sum_n C h_t + D x_t.
    """

    def __init__(self, channels: int, state: int, disc: str = "zoh", mode: str = "auto"):
        super().__init__()
        self.A_log = nn.Parameter(torch.empty(channels, state))
        self.log_dt = nn.Parameter(torch.empty(channels))
        self.B = nn.Parameter(torch.empty(channels, state))
        self.C = nn.Parameter(torch.empty(channels, state))
        self.D = nn.Parameter(torch.empty(channels))
        self.disc, self.mode = disc, mode

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Abar, Bbar), each (D, N)."""
        a = -torch.exp(self.A_log)
        dta = torch.exp(self.log_dt)[:, None] * a
        if self.disc == "zoh":
            # expm1 keeps (Abar - 1) / A accurate when dt A is tiny.
            return torch.exp(dta), torch.expm1(dta) / a * self.B
        denom = 1.0 - dta / 2.0
        return (1.0 + dta / 2.0) / denom, torch.exp(self.log_dt)[:, None] * self.B / denom

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, D, N) or None, lengths (B,) or None -> (y (B, T, D),
        h_T (B, D, N))."""
        abar, bbar = self.discrete()
        valid = valid_steps(x, lengths)
        h = diag_scan(abar, x[..., None] * bbar, h0, self.mode, valid)
        return zero_past((h * self.C).sum(-1) + self.D * x, valid), h[:, -1]


class LRU(nn.Module):
    """Linear Recurrent Unit (Orvieto et al. 2023), per channel: D channels with N complex
    states each. lambda = exp(-exp(nu_log) + i exp(theta_log)); gamma = sqrt(1 - |lambda|^2)
    normalises the input (computed from lambda, not a separate parameter);
    h_t = lambda h_{t-1} + gamma B x_t; y_t = Re(sum_n C h_t) + D x_t. Complex numbers are
    kept as real/imaginary pairs of real tensors. Sequential only (complex decay)."""

    def __init__(self, channels: int, state: int) -> None:
        super().__init__()
        for name in ("nu_log", "theta_log", "B_re", "B_im", "C_re", "C_im"):
            setattr(self, name, nn.Parameter(torch.empty(channels, state)))
        self.D = nn.Parameter(torch.empty(channels))

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, D, N, 2) or None, lengths (B,) or None -> (y (B, T, D),
        h_T (B, D, N, 2))."""
        nu = torch.exp(self.nu_log)
        mod, theta = torch.exp(-nu), torch.exp(self.theta_log)
        lr, li = mod * torch.cos(theta), mod * torch.sin(theta)
        gamma = torch.sqrt(-torch.expm1(-2.0 * nu))  # sqrt(1 - |lambda|^2), accurate near 1
        br = x[..., None] * (gamma * self.B_re)  # (B, T, D, N)
        bi = x[..., None] * (gamma * self.B_im)
        if h0 is None:
            hr, hi = torch.zeros_like(br[:, 0]), torch.zeros_like(bi[:, 0])
        else:
            hr, hi = h0[..., 0], h0[..., 1]
        valid = valid_steps(x, lengths)
        ys = []
        for t in range(x.shape[1]):
            nr, ni = lr * hr - li * hi + br[:, t], lr * hi + li * hr + bi[:, t]
            if valid is None:
                hr, hi = nr, ni
            else:  # past the length the state stays put
                keep = valid[:, t, None, None]
                hr, hi = torch.where(keep, nr, hr), torch.where(keep, ni, hi)
            ys.append((self.C_re * hr - self.C_im * hi).sum(-1))
        y = torch.stack(ys, dim=1) + self.D * x
        return zero_past(y, valid), torch.stack([hr, hi], dim=-1)


class SelectiveSSM(nn.Module):
    """Mamba-style selective scan (S6 without the conv/gating block), D channels, N states:
    dt = softplus(W_dt x + dt_bias) (B, T, D); B_t = W_B x, C_t = W_C x (B, T, N);
    h_t = exp(dt A) h_{t-1} + dt B_t x_t; y_t = sum_n C_t h_t + D x_t, A = -exp(A_log)."""

    def __init__(self, channels: int, state: int, mode: str = "auto") -> None:
        super().__init__()
        self.A_log = nn.Parameter(torch.empty(channels, state))
        self.dt_weight = nn.Parameter(torch.empty(channels, channels))
        self.dt_bias = nn.Parameter(torch.empty(channels))
        self.B_weight = nn.Parameter(torch.empty(state, channels))
        self.C_weight = nn.Parameter(torch.empty(state, channels))
        self.D = nn.Parameter(torch.empty(channels))
        self.mode = mode

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, D, N) or None, lengths (B,) or None -> (y (B, T, D),
        h_T (B, D, N))."""
        dt = F.softplus(F.linear(x, self.dt_weight, self.dt_bias))
        valid = valid_steps(x, lengths)
        if valid is not None:  # dt = 0 past the length: a = exp(0) = 1, b = 0
            dt = torch.where(valid[..., None], dt, 0.0)
        bt = F.linear(x, self.B_weight)[:, :, None, :]  # (B, T, 1, N)
        ct = F.linear(x, self.C_weight)[:, :, None, :]
        a = torch.exp(dt[..., None] * -torch.exp(self.A_log))  # (B, T, D, N), in (0, 1]
        h = diag_scan(a, (dt * x)[..., None] * bt, h0, self.mode)
        return zero_past((h * ct).sum(-1) + self.D * x, valid), h[:, -1]


def matrix_scan(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    S0: torch.Tensor | None,
    mode: str,
    chunk: int,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrix-state recurrence per head, S (dk, dv) and o_t = q_t S_t:
    kind "gla": S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t, w = log decay (B, H, T, dk);
    kind "delta": S_t = S_{t-1} + w_t k_t^T (v_t - k_t S_{t-1}), w = beta (B, H, T).

    q, k (B, H, T, dk), v (B, H, T, dv), S0 (B, H, dk, dv) or None (zeros). Returns
    (o (B, H, T, dv), S_T (B, H, dk, dv)). Modes other than "sequential" go to archc's
    chunked gla_scan / delta_scan; without archc (a standalone model.py) the loop below
    runs instead: the same recurrence, exact, only slower. valid (B, T) bool or None:
    steps where it is False leave S unchanged (gla: log decay 0 and k = 0; delta:
    beta = 0), in every mode.
    """
    if valid is not None:
        m = over_time(valid, q, dim=2)  # (B, 1, T, 1)
        if kind == "gla":
            k, w = torch.where(m, k, 0.0), torch.where(m, w, 0.0)
        else:
            w = torch.where(m[..., 0], w, 0.0)
    if mode != "sequential":
        try:
            from archc.backends.torch.scans.matrix import delta_scan, gla_scan
        except ImportError:  # standalone model.py without archc: the loop below is exact
            gla_scan = delta_scan = None
        if gla_scan is not None:
            fn = gla_scan if kind == "gla" else delta_scan
            return fn(q, k, v, w, S0, mode="chunked", chunk=chunk)
    B, H, T, dk = q.shape
    S = q.new_zeros(B, H, dk, v.shape[-1]) if S0 is None else S0.to(q.dtype)
    outs = []
    for t in range(T):
        kt, vt = k[:, :, t], v[:, :, t]
        if kind == "gla":
            S = torch.exp(w[:, :, t])[..., None] * S + kt[..., :, None] * vt[..., None, :]
        else:
            err = vt - torch.einsum("bhk,bhkv->bhv", kt, S)  # what S predicts wrongly
            S = S + w[:, :, t, None, None] * kt[..., :, None] * err[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(B, H, 0, v.shape[-1])
    return o, S


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class GLA(nn.Module):
    """Gated linear attention layer (Yang et al. 2023), width D, `heads` heads with key
    width dk and value width dv = D / heads:
    q = W_q x / sqrt(dk), k = W_k x, v = W_v x, log g = logsigmoid(W_g x + b_g) / 16,
    S_t = diag(g_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t, y = W_o concat_heads(o).

    The 1/16 temperature is the paper's tau = 16: it keeps g near 1 (long memory) at
    initialisation, g = sigmoid(.)^(1/16) >= 0.958 for pre-activations >= 0. The gate is
    full rank (the paper factors W_g as a rank-16 W_a W_b); the paper's output gate and
    group norm are left to the surrounding spec (e.g. a norm layer).
    """

    def __init__(
        self, dim: int, heads: int, key_dim: int, mode: str = "auto", chunk: int = 64
    ) -> None:
        super().__init__()
        self.weight_q = nn.Parameter(torch.empty(heads * key_dim, dim))
        self.weight_k = nn.Parameter(torch.empty(heads * key_dim, dim))
        self.weight_v = nn.Parameter(torch.empty(dim, dim))
        self.weight_g = nn.Parameter(torch.empty(heads * key_dim, dim))
        self.bias_g = nn.Parameter(torch.empty(heads * key_dim))
        self.weight_o = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.key_dim, self.mode, self.chunk = heads, key_dim, mode, chunk

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H, dk, dv) or None, lengths (B,) or None -> (y (B, T, D),
        S_T (B, H, dk, dv))."""
        n = self.heads
        q = _heads(F.linear(x, self.weight_q), n) * self.key_dim**-0.5
        k = _heads(F.linear(x, self.weight_k), n)
        v = _heads(F.linear(x, self.weight_v), n)
        log_g = _heads(F.logsigmoid(F.linear(x, self.weight_g, self.bias_g)), n) / 16.0
        valid = valid_steps(x, lengths)
        o, S = matrix_scan("gla", q, k, v, log_g, h0, self.mode, self.chunk, valid)
        return zero_past(F.linear(o.transpose(1, 2).flatten(2), self.weight_o), valid), S


class DeltaNet(nn.Module):
    """DeltaNet layer (Schlag et al. 2021; chunked by Yang et al. 2024), width D, `heads`
    heads of width d = D / heads: q, k = L2-normalised (per head) W_q x, W_k x; v = W_v x;
    beta = sigmoid(W_beta x + b_beta) per head; S_t = S_{t-1} + beta_t k_t^T (v_t - k_t
    S_{t-1}); o_t = q_t S_t; y = W_o concat_heads(o). Unit-norm keys and beta in (0, 1)
    make every step a contraction of S, so the state stays bounded at any length.
    """

    def __init__(self, dim: int, heads: int, mode: str = "auto", chunk: int = 64) -> None:
        super().__init__()
        self.weight_q = nn.Parameter(torch.empty(dim, dim))
        self.weight_k = nn.Parameter(torch.empty(dim, dim))
        self.weight_v = nn.Parameter(torch.empty(dim, dim))
        self.weight_beta = nn.Parameter(torch.empty(heads, dim))
        self.bias_beta = nn.Parameter(torch.empty(heads))
        self.weight_o = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.mode, self.chunk = heads, mode, chunk

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H, d, d) or None, lengths (B,) or None -> (y (B, T, D),
        S_T (B, H, d, d))."""
        n = self.heads
        q = F.normalize(_heads(F.linear(x, self.weight_q), n), dim=-1)
        k = F.normalize(_heads(F.linear(x, self.weight_k), n), dim=-1)
        v = _heads(F.linear(x, self.weight_v), n)
        beta = torch.sigmoid(F.linear(x, self.weight_beta, self.bias_beta)).transpose(1, 2)
        valid = valid_steps(x, lengths)
        o, S = matrix_scan("delta", q, k, v, beta, h0, self.mode, self.chunk, valid)
        return zero_past(F.linear(o.transpose(1, 2).flatten(2), self.weight_o), valid), S
