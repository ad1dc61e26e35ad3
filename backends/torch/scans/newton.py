"""ParaRNN-style Newton solver for nonlinear recurrences (scan mode ``newton``).

A nonlinear recurrence ``h_t = f(h_{t-1}, x_t)``, t = 1..T, is one nonlinear system
``F(h) = 0`` with ``F_t(h) = h_t - f(h_{t-1}, x_t)`` (Danieli et al., "ParaRNN").
Newton's method linearises ``f`` around the current guess ``h^(k)``::

    h_t^(k+1) = J_t h_{t-1}^(k+1) + (f(h_{t-1}^(k), x_t) - J_t h_{t-1}^(k)),
    J_t = d f / d h_{t-1} evaluated at (h_{t-1}^(k), x_t)

With a diagonal Jacobian (cells with *diagonal* recurrent weights) each iteration is
exactly one elementwise linear scan, which runs in parallel over time. Two facts make
this safe to use as a drop-in replacement for the sequential loop:

* any ``J`` leaves the solution of the system unchanged (the fixed point of the
  iteration is ``h = f(h_prev)`` whatever ``J`` is); ``J`` only sets the speed;
* after k iterations the first k states are exact (``h_1`` depends only on the known
  ``h0``), so at most T iterations are ever needed. Contractive cells converge in a
  handful; when ``iters`` runs out first we fall back to the exact sequential loop
  and say so once per call site (logger ``archc.scan``).

Gradients (``backward="implicit"``, the default) do not differentiate through the
iterations: at the solution ``h*`` the adjoint ``lam_t = g_t + J_{t+1} lam_{t+1}`` is
one *reverse* linear scan, and the parameter / input / h0 gradients are one
vector-Jacobian product of ``step`` at ``(h*_prev, x)``. That is exact for the
returned states (up to the solver tolerance), including after a fallback.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from archc.backends.torch.scans.linear import linear_scan

__all__ = [
    "BlockRNNParams",
    "DiagGRUParams",
    "DiagRNNParams",
    "NewtonInfo",
    "StepFn",
    "block_linear_scan",
    "block_tanh_rnn_step",
    "diag_gru_inputs",
    "diag_gru_step",
    "diag_gru_step_jac",
    "diag_rnn_inputs",
    "diag_tanh_rnn_step",
    "init_block_rnn",
    "init_diag_gru",
    "init_diag_rnn",
    "newton_scan",
    "sequential_scan",
]

log = logging.getLogger("archc.scan")

StepFn = Callable[[Tensor, Tensor], Tensor]
"""``step(h_prev, x) -> h``: (B, T, H), (B, T, Dx) -> (B, T, H), pointwise over time."""

# Call sites that already logged a fallback: one warning per site, not per call.
_WARNED_SITES: set[str] = set()


@dataclass
class NewtonInfo:
    """What one ``newton_scan`` call did.

    iterations: Newton iterations run (linear scans solved), 0 < iterations <= iters.
    converged: the relative update fell below the tolerance (or iterations >= T,
        where Newton is exact by construction).
    residual: the last relative update ``max|h^(k+1) - h^(k)| / max(1, max|h^(k+1)|)``
        (0.0 when stopped by ``iterations >= T``).
    fell_back: the returned states come from the sequential loop.
    """

    iterations: int
    converged: bool
    residual: float
    fell_back: bool


# --------------------------------------------------------------------------- references


def sequential_scan(step: StepFn, x: Tensor, h0: Tensor) -> Tensor:
    """The exact reference: ``h_t = step(h_{t-1}, x_t)`` one step at a time.

    x: (B, T, Dx), h0: (B, H) -> (B, T, H). Differentiable by plain autograd (BPTT).
    """
    h = h0
    out = []
    # unbind, not x[:, t]: each slice's backward would materialise a full (B, T, Dx)
    # zero gradient (O(T^2) memory traffic); unbind's backward is one stack.
    for xt in x.unbind(1):
        h = step(h.unsqueeze(1), xt.unsqueeze(1)).squeeze(1)
        out.append(h)
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- solver


def _shift(h: Tensor, h0: Tensor) -> Tensor:
    """(B, T, H) states -> (B, T, H) previous states ``[h0, h_1, ..., h_{T-1}]``."""
    return torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)


def _jvp_diag(step: StepFn, h_prev: Tensor, x: Tensor) -> Tensor:
    """Diagonal of d step / d h_prev by ONE forward-mode JVP with an all-ones tangent.

    Costs about one extra evaluation of ``step`` (forward AD carries a tangent through
    each op). It returns the row sums of the Jacobian, which equal its diagonal only
    when the Jacobian *is* diagonal -- the contract of ``jac="diag"``. (An exact
    diagonal of a dense Jacobian would need H JVPs, i.e. H times the cost.)
    """
    _, tangent = torch.func.jvp(lambda h: step(h, x), (h_prev,), (torch.ones_like(h_prev),))
    return tangent


def _jvp_blocks(step: StepFn, h_prev: Tensor, x: Tensor, block: int) -> Tensor:
    """(B, T, H/k, k, k) diagonal blocks of d step / d h_prev by k forward-mode JVPs.

    Tangent i is e_i repeated in every block, so the JVP returns column i of every
    block at once (exact when the Jacobian is block-diagonal). Costs ~k step evaluations.
    """
    n_blocks = h_prev.shape[-1] // block
    cols = []
    for i in range(block):
        tangent = torch.zeros_like(h_prev).unflatten(-1, (n_blocks, block))
        tangent[..., i] = 1.0
        _, col = torch.func.jvp(lambda h: step(h, x), (h_prev,), (tangent.flatten(-2),))
        cols.append(col.unflatten(-1, (n_blocks, block)))
    return torch.stack(cols, dim=-1)  # [..., row, col]


def _mv(a: Tensor, v: Tensor) -> Tensor:
    """(..., k, k) @ (..., k) -> (..., k). 2 x 2 blocks (the diagonal LSTM's (c, h)
    pairs) multiply elementwise, which on a CPU beats a batched matmul of tiny matrices
    and keeps the data-dependent Newton iterations out of the matmul-class FLOPs (as the
    diagonal scan's are); larger blocks use matmul."""
    if a.shape[-1] != 2:
        return (a @ v.unsqueeze(-1)).squeeze(-1)
    a00, a01, a10, a11 = a.flatten(-2).unbind(-1)
    v0, v1 = v.unbind(-1)
    return torch.stack([a00 * v0 + a01 * v1, a10 * v0 + a11 * v1], -1)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """(..., k, k) @ (..., k, k) -> (..., k, k); elementwise for 2 x 2 blocks like ``_mv``."""
    if a.shape[-1] != 2:
        return a @ b
    a00, a01, a10, a11 = a.flatten(-2).unbind(-1)
    b00, b01, b10, b11 = b.flatten(-2).unbind(-1)
    out = [
        a00 * b00 + a01 * b10,
        a00 * b01 + a01 * b11,
        a10 * b00 + a11 * b10,
        a10 * b01 + a11 * b11,
    ]
    return torch.stack(out, -1).unflatten(-1, (2, 2))


def block_linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, *, reverse: bool = False
) -> Tensor:
    """``h_t = A_t @ h_{t-1} + b_t`` with small dense blocks, parallel over time.

    a: (B, T, N, k, k), b: (B, T, N, k), h0: (B, N, k) or None -> (B, T, N, k).
    reverse=True runs t = T-1 .. 0 (``h_t = A_t @ h_{t+1} + b_t``). Hillis-Steele scan
    on the monoid (A1, b1).(A2, b2) = (A2 A1, A2 b1 + b2): log2(T) rounds of
    k x k products (``_mm``; O(T k^3 log T) work; meant for k <= ~16). Differentiable by autograd.
    """
    if reverse:
        return block_linear_scan(a.flip(1), b.flip(1), h0).flip(1)
    if h0 is not None:  # fold h0 into the first input; the scan then starts from zero
        b = torch.cat([b[:, :1] + _mv(a[:, 0], h0).unsqueeze(1), b[:, 1:]], 1)
    d = 1
    while d < a.shape[1]:
        a_lo, b_lo = a[:, :-d], b[:, :-d]  # the prefix ending d steps earlier
        a_hi, b_hi = a[:, d:], b[:, d:]
        b = torch.cat([b[:, :d], _mv(a_hi, b_lo) + b_hi], 1)
        a = torch.cat([a[:, :d], _mm(a_hi, a_lo)], 1)
        d *= 2
    return b


class _Structure:
    """How a Jacobian of structure ``jac`` multiplies, scans and transposes.

    diag: J (B, T, H). blockdiag: J (B, T, H/k, k, k) (states viewed as (B, T, H/k, k)).
    """

    def __init__(self, jac: str) -> None:
        self.block = jac == "blockdiag"

    def matvec(self, j: Tensor, v: Tensor) -> Tensor:
        if not self.block:
            return j * v
        return _mv(j, v.unflatten(-1, (j.shape[-3], j.shape[-1]))).flatten(-2)

    def scan(self, j: Tensor, b: Tensor, h0: Tensor | None, reverse: bool = False) -> Tensor:
        if not self.block:
            return linear_scan(j, b, h0, reverse=reverse)
        n, k = j.shape[-3], j.shape[-1]
        h0b = None if h0 is None else h0.unflatten(-1, (n, k))
        return block_linear_scan(j, b.unflatten(-1, (n, k)), h0b, reverse=reverse).flatten(-2)

    def adjoint_coeffs(self, j: Tensor) -> Tensor:
        """a_t = J_{t+1}^T (a_{T-1} = 0): the coefficients of the reverse adjoint scan."""
        jt = j.transpose(-1, -2) if self.block else j
        return torch.cat([jt[:, 1:], torch.zeros_like(jt[:, :1])], dim=1)


class _ImplicitAdjoint(torch.autograd.Function):
    """Forward: return the solved states ``h*``. Backward: solve the adjoint recurrence.

    Inputs: ``f`` = step(h*_prev, x) built WITH autograd (its graph carries the VJP to
    x, h0 and the cell parameters), ``a`` = (B, T, H) Jacobians shifted one step left
    (``a_t = J_{t+1}``, ``a_{T-1} = 0``, detached), ``h_star`` (detached). The gradient
    handed to ``f`` is ``lam_t = g_t + J_{t+1} lam_{t+1}``: a reverse linear scan.
    """

    @staticmethod
    def forward(ctx, f: Tensor, a: Tensor, h_star: Tensor, structure: _Structure) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        ctx.structure = structure
        return h_star.clone()  # the exact solved values, not f (f matches only to tol)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        lam = ctx.structure.scan(a, g.contiguous(), None, reverse=True)
        return lam, None, None, None


def _caller_site() -> str:
    # Two frames up: the caller of newton_scan (this helper is called from it).
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def newton_scan(
    step: StepFn,
    jacobian: StepFn | None,
    x: Tensor,
    h0: Tensor,
    *,
    iters: int = 8,
    tol: float = 1e-6,
    jac: str = "diag",
    backward: str = "implicit",
    block: int | None = None,
    site: str | None = None,
    step_jac: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, NewtonInfo]:
    """Solve ``h_t = step(h_{t-1}, x_t)`` for all t at once with Newton's method.

    Args:
        step: (B, T, H), (B, T, Dx) -> (B, T, H), applied pointwise over time (so it is
            vectorised over T); may close over parameters that require grad.
        jacobian: ``jacobian(h_prev, x)`` -> the Jacobian ``d step / d h_prev``:
            jac="diag": its diagonal (B, T, H); jac="blockdiag": its diagonal blocks
            (B, T, H/k, k, k) as [row, col]. ``None``: forward-mode JVPs at every
            Newton iteration -- diag: ONE JVP with an all-ones tangent (about one extra
            ``step`` evaluation; exact because ``jac="diag"`` declares the Jacobian
            diagonal); blockdiag: k JVPs (about k extra evaluations; needs ``block``).
        x: (B, T, Dx) inputs (already projected inputs are fine).
        h0: (B, H) initial state.
        iters: Newton iteration budget. When it runs out before convergence the result
            is recomputed with the exact sequential loop (``info.fell_back``) and ONE
            warning per call site goes to the ``archc.scan`` logger.
        tol: stop when ``max|h^(k+1) - h^(k)| / max(1, max|h^(k+1)|) < tol`` (absolute
            for small states, relative for large ones). The effective tolerance is
            floored at ``64 * eps`` of the dtype (float32: 7.6e-6) because rounding
            in the scan keeps the update from shrinking further. Newton converges
            quadratically, so the returned states are usually far more accurate.
        jac: "diag" (elementwise linear scan) or "blockdiag" (dense k x k blocks,
            Hillis-Steele block scan: O(k^3 log T) per element, for small k).
        backward: "implicit" -- exact gradients by the adjoint reverse linear scan at
            the solution (one extra ``step`` evaluation with autograd in forward).
            "unrolled" -- autograd through the last Newton iteration only, with the
            Jacobian detached; exact only at convergence (its error is proportional
            to the remaining Newton update). After a fallback both are exact.
        block: block size k for jac="blockdiag" with jacobian=None.
        site: name of the call site for the once-only warning (default: caller file:line).
        step_jac: optional ``(h_prev, x) -> (step, jacobian)`` computing both at once
            (a cell's gates are then evaluated once per Newton iteration, not twice);
            must agree with ``step`` and ``jacobian``.

    Returns:
        ``(h, info)`` with h: (B, T, H) all states.
    """
    if jac not in ("diag", "blockdiag"):
        raise ValueError(f"newton_scan: jac must be 'diag' or 'blockdiag', got {jac!r}")
    if jac == "blockdiag" and jacobian is None and (block is None or h0.shape[1] % block):
        raise ValueError(
            f"newton_scan: jac='blockdiag' with jacobian=None needs block dividing H="
            f"{h0.shape[1]}, got block={block}"
        )
    if backward not in ("implicit", "unrolled"):
        raise ValueError(
            f"newton_scan: backward must be 'implicit' or 'unrolled', got {backward!r}"
        )
    if iters < 1:
        raise ValueError(f"newton_scan: iters must be >= 1, got {iters}")
    if x.dim() != 3 or h0.dim() != 2 or x.shape[0] != h0.shape[0]:
        raise ValueError(
            f"newton_scan: expected x (B, T, Dx) and h0 (B, H), got {tuple(x.shape)} "
            f"and {tuple(h0.shape)}"
        )
    st = _Structure(jac)
    jac_fn: StepFn
    if jacobian is not None:
        jac_fn = jacobian
    elif jac == "diag":
        jac_fn = lambda h, xx: _jvp_diag(step, h, xx)  # noqa: E731
    else:
        jac_fn = lambda h, xx: _jvp_blocks(step, h, xx, block)  # type: ignore[arg-type] # noqa: E731
    n_steps = x.shape[1]
    eps_floor = 64.0 * torch.finfo(x.dtype if x.is_floating_point() else h0.dtype).eps
    tol_eff = max(tol, eps_floor)

    # --- Newton iterations: no autograd graph; gradients come from the adjoint below.
    h0_d, x_d = h0.detach(), x.detach()
    h = torch.zeros(x.shape[0], n_steps, h0.shape[1], dtype=h0.dtype, device=h0.device)
    h_before_last = h
    converged, residual, k = False, math.inf, 0
    with torch.no_grad():
        for k in range(1, iters + 1):  # k is reported in NewtonInfo
            h_prev = _shift(h, h0_d)
            if step_jac is not None:
                f, jd = step_jac(h_prev, x_d)
            else:
                f, jd = step(h_prev, x_d), jac_fn(h_prev, x_d)
            h_new = st.scan(jd, f - st.matvec(jd, h_prev), h0_d)
            h_before_last, h = h, h_new
            if k >= n_steps:  # the first k states are exact after k iterations
                converged, residual = True, 0.0
                break
            upd = (h_new - h_before_last).abs().max()
            scale = h_new.abs().max().clamp_min(1.0)
            residual = (upd / scale).item()  # one host sync per iteration
            if residual < tol_eff:
                converged = True
                break
            if not math.isfinite(residual):
                break  # diverged (overflow): no point iterating on

    fell_back = not converged
    if fell_back:
        key = site if site is not None else _caller_site()
        if key not in _WARNED_SITES:
            _WARNED_SITES.add(key)
            log.warning(
                "newton_scan at %s: not converged after %d Newton iterations (relative "
                "update %.2e >= tol %.1e, T=%d); fell back to the exact sequential loop "
                "(logged once per call site)",
                key,
                k,
                residual,
                tol_eff,
                n_steps,
            )
        with torch.no_grad():
            h = sequential_scan(step, x_d, h0_d)

    if not torch.is_grad_enabled():
        return h, NewtonInfo(k, converged, residual, fell_back)

    if backward == "unrolled" and not fell_back:
        # Re-run the last iteration with autograd. b must use the SAME h_prev that f
        # saw (h0 with grad at t=1), so that d h_1 / d h0 = J_1 + (df/dh0 - J_1).
        h_prev = _shift(h_before_last, h0)
        f = step(h_prev, x)
        with torch.no_grad():
            jd = jac_fn(h_prev.detach(), x_d)
        out = st.scan(jd, f - st.matvec(jd, h_prev), h0)
        return out, NewtonInfo(k, converged, residual, False)

    # Implicit: one step evaluation with autograd at the solution carries the VJP.
    h_prev_star = _shift(h, h0)  # h0 keeps its graph; the solved states are detached
    f = step(h_prev_star, x)
    if not f.requires_grad:
        return h, NewtonInfo(k, converged, residual, fell_back)
    with torch.no_grad():
        jd = jac_fn(h_prev_star.detach(), x_d)
        a = st.adjoint_coeffs(jd)
    out = _ImplicitAdjoint.apply(f, a, h, st)
    return out, NewtonInfo(k, converged, residual, fell_back)


def _reset_warnings() -> None:
    """Forget which call sites already warned (tests)."""
    _WARNED_SITES.clear()


# ------------------------------------------------------------------ diagonal cells
# ParaRNN makes GRU/RNN cells Newton-friendly by making the RECURRENT weights diagonal
# (vectors), so d h_t / d h_{t-1} is diagonal and each Newton step is an elementwise
# linear scan. Input projections stay dense and are applied once, outside the solver
# (``diag_*_inputs``), because the step is evaluated once per Newton iteration.


@dataclass
class DiagGRUParams:
    """Diagonal GRU. w: (3H, Dx) input projection for [z, r, c]; u: (3, H) diagonal
    recurrent weights; b: (3, H) biases."""

    w: Tensor
    u: Tensor
    b: Tensor

    def tensors(self) -> list[Tensor]:
        return [self.w, self.u, self.b]


@dataclass
class DiagRNNParams:
    """Diagonal tanh RNN ``h' = tanh(W x + u * h + b)``. w: (H, Dx); u, b: (H,)."""

    w: Tensor
    u: Tensor
    b: Tensor

    def tensors(self) -> list[Tensor]:
        return [self.w, self.u, self.b]


def init_diag_gru(
    dx: int, hidden: int, *, dtype: torch.dtype = torch.float32, u_scale: float = 0.5
) -> DiagGRUParams:
    """Random diagonal-GRU parameters (leaves that require grad); |u| <= u_scale."""
    w = torch.randn(3 * hidden, dx, dtype=dtype) / math.sqrt(dx)
    u = (torch.rand(3, hidden, dtype=dtype) * 2 - 1) * u_scale
    b = torch.randn(3, hidden, dtype=dtype) * 0.1
    return DiagGRUParams(*(p.requires_grad_() for p in (w, u, b)))


def init_diag_rnn(
    dx: int, hidden: int, *, dtype: torch.dtype = torch.float32, u_scale: float = 0.9
) -> DiagRNNParams:
    """Random diagonal tanh-RNN parameters (leaves that require grad); |u| <= u_scale
    keeps the cell contractive (|J| = (1 - h'^2) |u| < 1)."""
    w = torch.randn(hidden, dx, dtype=dtype) / math.sqrt(dx)
    u = (torch.rand(hidden, dtype=dtype) * 2 - 1) * u_scale
    b = torch.randn(hidden, dtype=dtype) * 0.1
    return DiagRNNParams(*(p.requires_grad_() for p in (w, u, b)))


def diag_gru_inputs(p: DiagGRUParams, x: Tensor) -> Tensor:
    """(B, T, Dx) raw inputs -> (B, T, 3H) pre-activations [Wz x, Wr x, Wc x]."""
    return x @ p.w.t()


def diag_rnn_inputs(p: DiagRNNParams, x: Tensor) -> Tensor:
    """(B, T, Dx) raw inputs -> (B, T, H) pre-activations W x."""
    return x @ p.w.t()


def diag_gru_step(p: DiagGRUParams) -> tuple[StepFn, StepFn]:
    """(step, jacobian) of the diagonal GRU, for inputs from ``diag_gru_inputs``.

    z = sigmoid(xz + uz*h + bz), r = sigmoid(xr + ur*h + br),
    c = tanh(xc + uc*(r*h) + bc), h' = (1 - z)*h + z*c.
    Shapes: h (B, T, H), x (B, T, 3H) -> (B, T, H).
    """

    def gates(h: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xz, xr, xc = x.chunk(3, dim=-1)
        z = torch.sigmoid(xz + p.u[0] * h + p.b[0])
        r = torch.sigmoid(xr + p.u[1] * h + p.b[1])
        c = torch.tanh(xc + p.u[2] * (r * h) + p.b[2])
        return z, r, c

    def step(h: Tensor, x: Tensor) -> Tensor:
        z, _, c = gates(h, x)
        return h + z * (c - h)  # == (1 - z) h + z c, one op fewer

    def jacobian(h: Tensor, x: Tensor) -> Tensor:
        z, r, c = gates(h, x)
        dz = z * (1 - z) * p.u[0]
        dr = r * (1 - r) * p.u[1]
        dc = (1 - c * c) * p.u[2] * (r + h * dr)
        return (1 - z) + z * dc + (c - h) * dz

    return step, jacobian


def diag_gru_step_jac(p: DiagGRUParams) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(h, x) -> (step(h, x), jacobian(h, x))`` of ``diag_gru_step``, sharing the gates.

    Newton's iterations need both at the same point; computing the three gates once
    instead of twice saves about 40% of an iteration's elementwise work.
    """

    def both(h: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        xz, xr, xc = x.chunk(3, dim=-1)
        z = torch.sigmoid(xz + p.u[0] * h + p.b[0])
        r = torch.sigmoid(xr + p.u[1] * h + p.b[1])
        c = torch.tanh(xc + p.u[2] * (r * h) + p.b[2])
        dz = z * (1 - z) * p.u[0]
        dc = (1 - c * c) * p.u[2] * (r + h * (r * (1 - r) * p.u[1]))
        return h + z * (c - h), (1 - z) + z * dc + (c - h) * dz

    return both


def diag_tanh_rnn_step(p: DiagRNNParams) -> tuple[StepFn, StepFn]:
    """(step, jacobian) of ``h' = tanh(x + u*h + b)`` for inputs from ``diag_rnn_inputs``.

    Shapes: h (B, T, H), x (B, T, H) -> (B, T, H). Jacobian: (1 - h'^2) * u.
    """

    def step(h: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(x + p.u * h + p.b)

    def jacobian(h: Tensor, x: Tensor) -> Tensor:
        y = torch.tanh(x + p.u * h + p.b)
        return (1 - y * y) * p.u

    return step, jacobian


@dataclass
class BlockRNNParams:
    """Block-diagonal tanh RNN ``h' = tanh(W x + U h + b)``, U = blockdiag(u[0..N-1]).
    w: (H, Dx); u: (N, k, k) with N * k = H; b: (H,)."""

    w: Tensor
    u: Tensor
    b: Tensor

    def tensors(self) -> list[Tensor]:
        return [self.w, self.u, self.b]


def init_block_rnn(
    dx: int, hidden: int, block: int, *, dtype: torch.dtype = torch.float32, scale: float = 0.9
) -> BlockRNNParams:
    """Random block-diagonal tanh-RNN parameters; each block has spectral norm ~<= scale."""
    w = torch.randn(hidden, dx, dtype=dtype) / math.sqrt(dx)
    u = torch.randn(hidden // block, block, block, dtype=dtype)
    u = u / torch.linalg.matrix_norm(u, ord=2, keepdim=True) * scale
    b = torch.randn(hidden, dtype=dtype) * 0.1
    return BlockRNNParams(*(p.requires_grad_() for p in (w, u, b)))


def block_tanh_rnn_step(p: BlockRNNParams) -> tuple[StepFn, StepFn]:
    """(step, jacobian) of the block-diagonal tanh RNN, inputs pre-projected (B, T, H).

    jacobian -> (B, T, N, k, k) blocks ``diag(1 - h'^2) @ u``.
    """
    n, k = p.u.shape[0], p.u.shape[1]

    def pre(h: Tensor, x: Tensor) -> Tensor:
        uh = (p.u @ h.unflatten(-1, (n, k)).unsqueeze(-1)).squeeze(-1).flatten(-2)
        return x + uh + p.b

    def step(h: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(pre(h, x))

    def jacobian(h: Tensor, x: Tensor) -> Tensor:
        y = torch.tanh(pre(h, x))
        return (1 - y * y).unflatten(-1, (n, k)).unsqueeze(-1) * p.u

    return step, jacobian
