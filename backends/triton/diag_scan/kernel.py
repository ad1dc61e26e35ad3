"""Triton kernels of the diagonal linear scan h_t = a_t * h_{t-1} + b_t (forward and backward).

Layout: a, b, h, gh, ga, gb are contiguous (B, T, D); h0, gh0 are (B, D). One program
owns one batch row and BLOCK_D features and walks T in chunks of CHUNK_T steps. A
chunk is loaded as a (CHUNK_T, BLOCK_D) tile (coalesced along D), scanned in registers
with ``tl.associative_scan`` on the monoid (a1, b1).(a2, b2) = (a1 a2, a2 b1 + b2), and
joined to the carried state: h = A_cum * carry + B_cum. Only products of decays are
formed (no division, no exp of a cumulative log), so |a| <= 1 cannot overflow and
decays near 0 just underflow to 0. Everything is accumulated in float32.

Padding steps past T load a = 1, b = 0, which leave the state unchanged, so the
carry is always the last row of the scanned tile.

The backward walks T in reverse, loading each tile with its rows in reversed time
order so that the same forward scan computes the adjoint
    g_t = gh_t + a_{t+1} g_{t+1}     (g_T = 0)
and then gb_t = g_t, ga_t = g_t * h_{t-1} (h_{-1} = h0), gh0 = a_0 * g_0.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) happens first, then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _last_row(x, rows, CHUNK_T: tl.constexpr):
    # Row CHUNK_T-1 of a (CHUNK_T, BLOCK_D) tile as a (BLOCK_D,) vector.
    return tl.sum(tl.where(rows[:, None] == CHUNK_T - 1, x, 0.0), axis=0)


@triton.jit
def diag_scan_fwd_kernel(
    a_ptr,
    b_ptr,
    h0_ptr,
    h_ptr,
    T,
    D,
    HAS_H0: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CHUNK_T: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK_T)
    base = pid_b * T * D  # int64: B * T * D may exceed 2**31

    if HAS_H0:
        carry = tl.load(h0_ptr + pid_b * D + cols, mask=col_ok, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_D,), dtype=tl.float32)

    for t0 in range(0, T, CHUNK_T):
        t = t0 + rows
        offs = base + t[:, None].to(tl.int64) * D + cols[None, :]
        m = (t[:, None] < T) & col_ok[None, :]
        av = tl.load(a_ptr + offs, mask=m, other=1.0).to(tl.float32)
        bv = tl.load(b_ptr + offs, mask=m, other=0.0).to(tl.float32)
        acum, bcum = tl.associative_scan((av, bv), 0, _combine)
        h = acum * carry[None, :] + bcum
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=m)
        carry = _last_row(h, rows, CHUNK_T)


@triton.jit
def diag_scan_bwd_kernel(
    a_ptr,
    h_ptr,
    h0_ptr,
    gh_ptr,
    ga_ptr,
    gb_ptr,
    gh0_ptr,
    T,
    D,
    HAS_H0: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CHUNK_T: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK_T)
    base = pid_b * T * D
    n_chunks = tl.cdiv(T, CHUNK_T)

    if HAS_H0:
        h0 = tl.load(h0_ptr + pid_b * D + cols, mask=col_ok, other=0.0).to(tl.float32)
    else:
        h0 = tl.zeros((BLOCK_D,), dtype=tl.float32)

    carry = tl.zeros((BLOCK_D,), dtype=tl.float32)  # g_{t+1} entering the chunk
    for k in range(0, n_chunks):
        # Row i of this tile is time t = T - 1 - (k * CHUNK_T + i): reversed order.
        t = T - 1 - (k * CHUNK_T + rows)
        t_ok = t >= 0
        m = t_ok[:, None] & col_ok[None, :]
        offs = base + t[:, None].to(tl.int64) * D + cols[None, :]
        # decay of the adjoint recurrence at t is a_{t+1}; a_T = 0 ends it (g_T = 0)
        m_next = ((t + 1)[:, None] < T) & m
        a_next = tl.load(a_ptr + offs + D, mask=m_next, other=0.0).to(tl.float32)
        # padding rows (t < 0) must leave the carry unchanged: decay 1, input 0
        a_next = tl.where(t_ok[:, None], a_next, 1.0)
        gv = tl.load(gh_ptr + offs, mask=m, other=0.0).to(tl.float32)
        acum, gcum = tl.associative_scan((a_next, gv), 0, _combine)
        g = acum * carry[None, :] + gcum
        # h_{t-1}: from h, or h0 at t == 0
        m_prev = ((t - 1)[:, None] >= 0) & m
        h_prev = tl.load(h_ptr + offs - D, mask=m_prev, other=0.0).to(tl.float32)
        h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
        tl.store(gb_ptr + offs, g.to(gb_ptr.dtype.element_ty), mask=m)
        tl.store(ga_ptr + offs, (g * h_prev).to(ga_ptr.dtype.element_ty), mask=m)
        carry = _last_row(g, rows, CHUNK_T)

    if HAS_H0:
        # after the loop the carry is g_0 (padding rows kept it); gh0 = a_0 * g_0
        a0 = tl.load(a_ptr + base + cols, mask=col_ok, other=0.0).to(tl.float32)
        tl.store(gh0_ptr + pid_b * D + cols, (a0 * carry).to(gh0_ptr.dtype.element_ty), mask=col_ok)
