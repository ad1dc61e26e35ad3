"""Diagonal (elementwise) linear recurrence ``h_t = a_t * h_{t-1} + b_t`` in pure torch.

This is the workhorse of diagonal SSMs (S4D / LRU / Mamba-style selective scans),
minGRU / minLSTM, and of the Newton (ParaRNN) solver, whose every iteration is one
such scan forward and one reversed scan for the adjoint.

Modes (all differentiable wrt ``a``, ``b`` and ``h0``):

- ``"sequential"``: a Python loop over T; the reference. Any real ``a``.
- ``"associative"``: Hillis-Steele scan on the monoid
  ``(a1, b1) . (a2, b2) = (a1 * a2, a2 * b1 + b2)``: log2(T) rounds of O(T) work.
  Any real ``a`` (it multiplies, never takes a log). Autograd through torch ops.
- ``"chunked"``: T is cut into chunks of ``chunk`` steps. Level 1 scans every chunk
  from a zero state at once (``chunk`` vectorised steps over all chunks), keeping the
  running product of decays; level 2 carries the state across chunk ends (T / chunk
  steps); then ``h = local + decay_product * carry``. About 2 sqrt(T) steps instead
  of T. Decay products are formed by multiplication only (no log, exp or division),
  so decays at 0, near 1 or negative cannot overflow or NaN; a vanishing product
  underflows to 0. Accumulates in at least float32. The backward pass is analytic
  (an adjoint scan, itself chunked), so double backward works too.
- ``"auto"``: on CUDA, the Triton kernel (backends/triton/diag_scan) when its
  ``can_lower`` accepts the inputs (a refusal is logged once with its reason);
  otherwise sequential for T <= 16 and chunked for longer sequences. ``"chunked"`` on
  CUDA also runs the kernel (the select-scan-mode pass fixes long scans to it).

Half-precision inputs are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.passes.select_scan_mode import SHORT_T

__all__ = ["linear_scan", "linear_scan_modes"]

_MODES = ("auto", "sequential", "associative", "chunked")


# At or below this T the Python loop beats the chunked machinery (few ops, no logs);
# the select-scan-mode pass uses the same threshold.
_AUTO_SEQUENTIAL_MAX_T = SHORT_T


def linear_scan_modes() -> tuple[str, ...]:
    """The accepted ``mode`` values of :func:`linear_scan`."""
    return _MODES


def linear_scan(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    *,
    mode: str = "auto",
    chunk: int = 64,
    reverse: bool = False,
    kernel: bool = True,
) -> Tensor:
    """Solve ``h_t = a_t * h_{t-1} + b_t`` along dim 1 (elementwise over features).

    Args:
        a: decays, (B, T, *F), real floating point.
        b: inputs, (B, T, *F), same shape as ``a``.
        h0: initial state (B, *F), or None for zeros.
        mode: "auto" | "sequential" | "associative" | "chunked" (see module docstring).
        chunk: chunk length of the chunked mode (>= 1).
        reverse: run from t = T-1 down to 0: ``h_t = a_t * h_{t+1} + b_t`` with
            ``h_T = h0`` (the adjoint recurrence).
        kernel: on CUDA, modes "auto" and "chunked" run the Triton kernel (itself a
            chunked scan) when its ``can_lower`` accepts; False forces the torch path
            (reference tests, benchmarks).

    Returns:
        h: (B, T, *F) in the dtype of ``b`` (computed in at least float32).
    """
    if mode not in _MODES:
        raise ValueError(f"linear_scan: unknown mode {mode!r}; expected one of {_MODES}")
    if a.shape != b.shape:
        raise ValueError(f"linear_scan: a {tuple(a.shape)} and b {tuple(b.shape)} differ")
    if a.dim() < 2:
        raise ValueError(f"linear_scan: expected (B, T, *F), got {tuple(a.shape)}")
    if h0 is not None and h0.shape != a.shape[:1] + a.shape[2:]:
        raise ValueError(
            f"linear_scan: h0 {tuple(h0.shape)} does not match (B, *F) = "
            f"{tuple(a.shape[:1] + a.shape[2:])}"
        )
    if chunk < 1:
        raise ValueError(f"linear_scan: chunk must be >= 1, got {chunk}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError("linear_scan: a and b must be real floating point tensors")

    if kernel and mode in ("auto", "chunked") and a.is_cuda and a.shape[1] > 0:
        h = _try_triton(a, b, h0, reverse)
        if h is not None:
            return h
        mode = "sequential" if a.shape[1] <= _AUTO_SEQUENTIAL_MAX_T else "chunked"

    out_dtype = b.dtype
    # Accumulate in float32 at least (bf16/fp16 inputs), float64 stays float64.
    work = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    if h0 is not None:
        work = torch.promote_types(work, h0.dtype)
    a, b = a.to(work), b.to(work)
    h0 = h0.to(work) if h0 is not None else None

    return _dispatch(a, b, h0, mode, chunk, reverse).to(out_dtype)


def _dispatch(
    a: Tensor, b: Tensor, h0: Tensor | None, mode: str, chunk: int, reverse: bool
) -> Tensor:
    if a.shape[1] == 0:
        return torch.empty_like(b)
    if mode == "auto":
        mode = "sequential" if a.shape[1] <= _AUTO_SEQUENTIAL_MAX_T else "chunked"
    if mode == "chunked":
        return _ChunkedScan.apply(a, b, h0, chunk, reverse)
    if reverse:
        # The reversed recurrence is the forward one on time-flipped inputs.
        return _dispatch(a.flip(1), b.flip(1), h0, mode, chunk, False).flip(1)
    if mode == "sequential":
        return _scan_sequential(a, b, h0)
    return _scan_associative(a, b, h0)


def _try_triton(a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool) -> Tensor | None:
    """The Triton kernel on the original dtypes (it accumulates in float32 itself), or
    None after logging (once) why it does not apply."""
    # Imported lazily: triton is optional, and absent on CPU-only installs.
    from archc.backends.triton.fallback import log_fallback

    try:
        from archc.backends.triton.diag_scan.op import can_lower, diag_scan
    except ImportError as err:
        log_fallback("diag_scan", f"triton unavailable: {err}")
        return None
    for x in (a, b) if h0 is None else (a, b, h0):
        ok, reason = can_lower(a.device, x.dtype, tuple(a.shape))
        if not ok:
            break
    if not ok:
        log_fallback("diag_scan", reason)
        return None
    if reverse:
        return diag_scan(a.flip(1), b.flip(1), h0).flip(1)
    return diag_scan(a, b, h0)


# ----------------------------------------------------------------------------- sequential


def _scan_sequential(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """(B, T, *F) -> (B, T, *F) by a Python loop; the reference."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    # unbind, not a[:, t]: the backward of T slices would zero-fill T full-size
    # gradients (O(T^2) memory traffic); unbind's backward is one stack.
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):
        h = torch.addcmul(b_t, a_t, h)
        out.append(h)
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- associative


def _scan_associative(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """Hillis-Steele inclusive scan of (a, b) pairs along dim 1: log2(T) rounds.

    After the round with offset d, (A_t, B_t) composes steps t-2d+1..t, so B_t is the
    state at t started from zero d-windows back; folding h0 into b_0 makes it exact.
    Out-of-place updates keep autograd simple.
    """
    if h0 is not None:
        b = torch.cat([(b[:, :1] + a[:, :1] * h0.unsqueeze(1)), b[:, 1:]], dim=1)
    T = a.shape[1]
    d = 1
    while d < T:
        # (A_{t-d}, B_{t-d}) then (A_t, B_t): (A_{t-d} A_t, A_t B_{t-d} + B_t)
        b = torch.cat([b[:, :d], torch.addcmul(b[:, d:], a[:, d:], b[:, :-d])], dim=1)
        a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], dim=1)
        d *= 2
    return b


# ----------------------------------------------------------------------------- chunked


def _chunked_forward(
    a: Tensor, b: Tensor, h0: Tensor | None, chunk: int, reverse: bool = False
) -> Tensor:
    """Three-level chunked scan; (B, T, *F) -> (B, T, *F). `reverse` runs t = T-1 .. 0.

    Level 1 runs every chunk from a zero state at once (C steps on (B, T/C, D) tiles),
    keeping only each chunk's final state, and takes each chunk's decay product; level 2
    carries the state across chunks (T/C steps on (B, D)); level 3 reruns every chunk
    from its entering state, writing each step straight into its slice of the output
    (``out=``). About 3 sqrt(T) vectorised steps instead of T, and one (B, T, D) buffer:
    on a CPU, fresh large buffers (page faults) cost as much as the arithmetic. Decay
    products are formed by multiplication only (no log, exp or division), so decays at
    0, near 1 or negative cannot overflow: a vanishing product underflows to 0.
    Accumulates in at least float32. The reverse direction needs no flipped copies.
    """
    B, T = a.shape[:2]
    feat = a.shape[2:]
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T
    acc = torch.promote_types(b.dtype, torch.float32)
    a2 = a.reshape(B, T, -1).to(acc)
    b2 = b.reshape(B, T, -1).to(acc)
    D = a2.shape[-1]
    if pad:
        # Padding steps (a = 1, b = 0) leave the state unchanged in either direction;
        # they are cut off below.
        a2 = torch.cat([a2, a2.new_ones(B, pad, D)], dim=1)
        b2 = torch.cat([b2, b2.new_zeros(B, pad, D)], dim=1)
    a4 = a2.view(B, n, C, D)
    b4 = b2.view(B, n, C, D)
    steps = list(range(C - 1, -1, -1) if reverse else range(C))
    h = b4[:, :, steps[0]]
    for t in steps[1:]:  # level 1: every chunk from zero, final states only
        h = torch.addcmul(b4[:, :, t], a4[:, :, t], h)
    decay = a4.prod(dim=2)  # (B, n, D): the same product in either direction
    state = b2.new_zeros(B, D) if h0 is None else h0.reshape(B, D).to(acc)
    carry = torch.empty(B, n, D, dtype=acc, device=a.device)
    for k in range(n - 1, -1, -1) if reverse else range(n):  # level 2: entering states
        carry[:, k] = state
        state = torch.addcmul(h[:, k], decay[:, k], state)
    out = torch.empty_like(b4)
    prev = carry
    for t in steps:  # level 3: every chunk again, from its entering state
        prev = torch.addcmul(b4[:, :, t], a4[:, :, t], prev, out=out[:, :, t])
    return out.view(B, n * C, D)[:, :T].reshape(B, T, *feat).to(b.dtype)


class _ChunkedScan(torch.autograd.Function):
    """Chunked scan with an analytic backward (the adjoint is another chunked scan, run
    in the opposite direction).

    Backward of h_t = a_t h_{t-1} + b_t with upstream gh:
        g_t = gh_t + a_{t+1} g_{t+1}      (reverse scan, decays shifted by one)
        db_t = g_t,  da_t = g_t * h_{t-1},  dh0 = a_0 * g_0
    and mirrored in time for `reverse`. The backward is written in differentiable torch
    ops, so double backward works.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None, chunk: int, reverse: bool) -> Tensor:  # type: ignore[override]
        h = _chunked_forward(a, b, h0, chunk, reverse)
        ctx.chunk, ctx.reverse = chunk, reverse
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(a, h, h0 if h0 is not None else torch.zeros_like(h[:, 0]))
        return h

    @staticmethod
    def backward(ctx, gh: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a, h, h0 = ctx.saved_tensors
        # `nxt` is the step after t in the scan's direction, `src` the one before it.
        fwd = not ctx.reverse
        nxt, src = (slice(1, None), slice(None, -1)) if fwd else (slice(None, -1), slice(1, None))
        first, end = (0, -1) if fwd else (-1, 0)
        # The adjoint's decays: a of the following step, 0 past the last one.
        a_adj = torch.empty_like(a)
        a_adj[:, src] = a[:, nxt]
        a_adj[:, end] = 0.0
        g = _ChunkedScan.apply(a_adj, gh.contiguous(), None, ctx.chunk, fwd)
        ga = torch.empty_like(g)
        # da_t = g_t * (the state before step t). Without double backward (the usual
        # case) the product goes straight into its slice; `out=` is not differentiable.
        if torch.is_grad_enabled():
            ga[:, nxt] = g[:, nxt] * h[:, src]
        else:
            torch.mul(g[:, nxt], h[:, src], out=ga[:, nxt])
        ga[:, first] = g[:, first] * h0
        gh0 = a[:, first] * g[:, first] if ctx.has_h0 else None
        return ga, g, gh0, None, None
