"""Triton kernels of chunked gated linear attention (GLA): forward and backward.

Recurrence (per batch-head): ``S_t = diag(g_t) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t`` with
g_t = exp(log_g_t). Layout: q, k, log_g contiguous (BH, T, DK); v, o (BH, T, DV);
S0, S_T (BH, DK, DV), S_T float32.

One program owns one batch-head and BV value columns (grid = (cdiv(DV, BV), BH)) and
walks T in chunks of BT steps, holding its (BK, BV) slice of the state in registers in
float32. The whole key dimension is one tile (BK = next power of 2 >= DK): the decay is
per key dimension, so the intra-chunk scores need every key column at once.

Per chunk, with b = within-chunk cumulative log decay (b <= 0, non-increasing):
- inter-chunk:  o  = (q * exp(b)) @ S
- intra-chunk:  A[t, s] = sum_d q_td k_sd exp(b_td - b_sd), s <= t, formed as a
  (BT, BT, BK) tile with the causal mask applied to the exponent *before* the exp, so
  no exp sees a positive argument (the (q e^b)(k e^-b)^T factorisation overflows fp32
  once a chunk's decay passes e^-88); o += A @ v
- state:        S  = exp(b_last) * S + (k * exp(b_last - b))^T @ v   (exponents <= 0)
Rows past T load q = k = v = 0 and log_g = 0, which leave the state unchanged.
Dots use input_precision="ieee" (full fp32, as the interpreter computes; no TF32).

Backward (two kernels; nothing but the inputs is saved by the forward):
- ``gla_bwd_state_kernel`` (grid (cdiv(DV, BV), BH)) re-runs the forward state recurrence
  in fp32, writing the state at every chunk start to ``h`` (BH, NT, DK, DV), then runs the
  adjoint recurrence ``dS = exp(b_last) * dS' + (q exp(b))^T do`` from the last chunk
  down, writing the gradient at every chunk end to ``dh`` and the last one to dS0.
- ``gla_bwd_grads_kernel`` (grid (NT, BH)) then differentiates each chunk on its own,
  given h and dh. With the strict causal part P[t, s, d] = dA[t, s] q_td k_sd
  exp(b_td - b_sd) (s < t, dA = do v^T), the log-decay gradient is
  ``dlog_g_r = sum_{t>=r} (q dq_inter + q dq_strict - k dk_strict)_t``
  ``          + exp(b_last) sum_v(S dS') + sum_{s<r} (k dk_state)_s``:
  the diagonal s = t (no decay) and the state term's own step are kept out of the
  log-decay sums, since there two O(1) terms of opposite sign would cancel and their
  rounding swamp the true (tiny) gradient when decays are small. The prefix/suffix sums
  are dots with 0/1 triangular matrices (no subtraction of an inclusive sum).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gla_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    s0_ptr,
    o_ptr,
    sT_ptr,
    T,
    DK,
    DV,
    HAS_S0: tl.constexpr,
    BK: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rk = tl.arange(0, BK)
    rv = pid_v * BV + tl.arange(0, BV)
    rt = tl.arange(0, BT)
    k_ok = rk < DK
    v_ok = rv < DV
    qk_base = pid_bh * T * DK  # int64: BH * T * DK may exceed 2**31
    v_base = pid_bh * T * DV
    s_offs = pid_bh * DK * DV + rk[:, None] * DV + rv[None, :]
    s_mask = k_ok[:, None] & v_ok[None, :]

    if HAS_S0:
        S = tl.load(s0_ptr + s_offs, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)

    causal = rt[:, None] >= rt[None, :]  # (t, s): s <= t

    for t0 in range(0, T, BT):
        t = t0 + rt
        t_ok = t < T
        tt = t[:, None].to(tl.int64)
        mk = t_ok[:, None] & k_ok[None, :]
        mv = t_ok[:, None] & v_ok[None, :]
        offk = qk_base + tt * DK + rk[None, :]
        offv = v_base + tt * DV + rv[None, :]
        q = tl.load(q_ptr + offk, mask=mk, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + offk, mask=mk, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offk, mask=mk, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offv, mask=mv, other=0.0).to(tl.float32)

        b = tl.cumsum(g, axis=0)  # (BT, BK) within-chunk log decay, <= 0
        b_last = tl.sum(g, axis=0)  # (BK,) the chunk's total log decay

        # Carried state, decayed from the chunk start to t.
        o = tl.dot(q * tl.exp(b), S, input_precision="ieee")

        # Intra-chunk scores; masked exponent -> exp(-inf) = 0 above the diagonal.
        diff = b[:, None, :] - b[None, :, :]
        diff = tl.where(causal[:, :, None], diff, float("-inf"))
        A = tl.sum(q[:, None, :] * k[None, :, :] * tl.exp(diff), axis=2)  # (BT, BT)
        o += tl.dot(A, v, input_precision="ieee")
        tl.store(o_ptr + offv, o.to(o_ptr.dtype.element_ty), mask=mv)

        k_dec = k * tl.exp(b_last[None, :] - b)
        S = S * tl.exp(b_last)[:, None] + tl.dot(tl.trans(k_dec), v, input_precision="ieee")

    tl.store(sT_ptr + s_offs, S, mask=s_mask)


@triton.jit
def gla_bwd_state_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    s0_ptr,
    do_ptr,
    dsT_ptr,
    h_ptr,
    dh_ptr,
    ds0_ptr,
    T,
    NT,
    DK,
    DV,
    HAS_S0: tl.constexpr,
    BK: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
):
    """Chunk-start states h[bh, c] and chunk-end state gradients dh[bh, c]; dS0."""
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rk = tl.arange(0, BK)
    rv = pid_v * BV + tl.arange(0, BV)
    rt = tl.arange(0, BT)
    k_ok = rk < DK
    v_ok = rv < DV
    qk_base = pid_bh * T * DK
    v_base = pid_bh * T * DV
    s_in = rk[:, None] * DV + rv[None, :]
    s_offs = pid_bh * DK * DV + s_in
    s_mask = k_ok[:, None] & v_ok[None, :]
    h_base = pid_bh * NT * DK * DV

    if HAS_S0:
        S = tl.load(s0_ptr + s_offs, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)
    for c in range(0, NT):
        tl.store(h_ptr + h_base + c * DK * DV + s_in, S, mask=s_mask)
        t = c * BT + rt
        t_ok = t < T
        tt = t[:, None].to(tl.int64)
        mk = t_ok[:, None] & k_ok[None, :]
        mv = t_ok[:, None] & v_ok[None, :]
        k = tl.load(k_ptr + qk_base + tt * DK + rk[None, :], mask=mk, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + qk_base + tt * DK + rk[None, :], mask=mk, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + v_base + tt * DV + rv[None, :], mask=mv, other=0.0).to(tl.float32)
        b = tl.cumsum(g, axis=0)
        b_last = tl.sum(g, axis=0)
        k_dec = k * tl.exp(b_last[None, :] - b)
        S = S * tl.exp(b_last)[:, None] + tl.dot(tl.trans(k_dec), v, input_precision="ieee")

    dS = tl.load(dsT_ptr + s_offs, mask=s_mask, other=0.0).to(tl.float32)
    for i in range(0, NT):
        c = NT - 1 - i
        tl.store(dh_ptr + h_base + c * DK * DV + s_in, dS, mask=s_mask)
        t = c * BT + rt
        t_ok = t < T
        tt = t[:, None].to(tl.int64)
        mk = t_ok[:, None] & k_ok[None, :]
        mv = t_ok[:, None] & v_ok[None, :]
        q = tl.load(q_ptr + qk_base + tt * DK + rk[None, :], mask=mk, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + qk_base + tt * DK + rk[None, :], mask=mk, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + v_base + tt * DV + rv[None, :], mask=mv, other=0.0).to(tl.float32)
        b = tl.cumsum(g, axis=0)
        b_last = tl.sum(g, axis=0)
        q_dec = q * tl.exp(b)
        dS = dS * tl.exp(b_last)[:, None] + tl.dot(tl.trans(q_dec), do, input_precision="ieee")
    tl.store(ds0_ptr + s_offs, dS, mask=s_mask)


@triton.jit
def gla_bwd_grads_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    do_ptr,
    h_ptr,
    dh_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dg_ptr,
    T,
    NT,
    DK,
    DV,
    BK: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
):
    """dq, dk, dv, dlog_g of one chunk (c = program_id(0)) from h[c] and dh[c]."""
    c = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rk = tl.arange(0, BK)
    rt = tl.arange(0, BT)
    k_ok = rk < DK
    t = c * BT + rt
    t_ok = t < T
    tt = t[:, None].to(tl.int64)
    qk_base = pid_bh * T * DK
    v_base = pid_bh * T * DV
    h_base = (pid_bh * NT + c) * DK * DV
    mk = t_ok[:, None] & k_ok[None, :]
    offk = qk_base + tt * DK + rk[None, :]
    q = tl.load(q_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    b = tl.cumsum(g, axis=0)
    b_last = tl.sum(g, axis=0)
    e_b = tl.exp(b)
    e_after = tl.exp(b_last[None, :] - b)  # decay from s to the chunk end, <= 1

    # Strictly causal decay tile exp(b_t - b_s), s < t; the diagonal is handled apart.
    strict = rt[:, None] > rt[None, :]
    diff = tl.where(strict[:, :, None], b[:, None, :] - b[None, :, :], float("-inf"))
    E = tl.exp(diff)  # (BT, BT, BK)
    # Intra-chunk scores with the diagonal (q_t . k_t), as in the forward.
    A = tl.sum(q[:, None, :] * k[None, :, :] * E, axis=2) + tl.where(
        rt[:, None] == rt[None, :], tl.sum(q * k, axis=1)[:, None], 0.0
    )

    dA = tl.zeros((BT, BT), dtype=tl.float32)  # do_t . v_s
    dq_inter = tl.zeros((BT, BK), dtype=tl.float32)  # do S^T
    dk_state = tl.zeros((BT, BK), dtype=tl.float32)  # v dS'^T
    s_term = tl.zeros((BK,), dtype=tl.float32)  # sum_v S * dS'
    for v0 in range(0, DV, BV):
        rv = v0 + tl.arange(0, BV)
        v_ok = rv < DV
        mv = t_ok[:, None] & v_ok[None, :]
        offv = v_base + tt * DV + rv[None, :]
        s_in = h_base + rk[:, None] * DV + rv[None, :]
        s_mask = k_ok[:, None] & v_ok[None, :]
        v = tl.load(v_ptr + offv, mask=mv, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + offv, mask=mv, other=0.0).to(tl.float32)
        S = tl.load(h_ptr + s_in, mask=s_mask, other=0.0)
        dS = tl.load(dh_ptr + s_in, mask=s_mask, other=0.0)
        dA += tl.dot(do, tl.trans(v), input_precision="ieee")
        dq_inter += tl.dot(do, tl.trans(S), input_precision="ieee")
        dk_state += tl.dot(v, tl.trans(dS), input_precision="ieee")
        s_term += tl.sum(S * dS, axis=1)
        dv = tl.dot(tl.trans(A), do, input_precision="ieee")
        dv += tl.dot(k * e_after, dS, input_precision="ieee")
        tl.store(dv_ptr + offv, dv.to(dv_ptr.dtype.element_ty), mask=mv)

    dq_inter = dq_inter * e_b
    dk_state = dk_state * e_after
    dA_s = tl.where(strict, dA, 0.0)
    dq_strict = tl.sum(dA_s[:, :, None] * k[None, :, :] * E, axis=1)
    dk_strict = tl.sum(dA_s[:, :, None] * q[:, None, :] * E, axis=0)
    dA_diag = tl.sum(tl.where(rt[:, None] == rt[None, :], dA, 0.0), axis=1)
    dq = dq_inter + dq_strict + dA_diag[:, None] * k
    dk = dk_state + dk_strict + dA_diag[:, None] * q

    # dlog_g_r: suffix sum over t >= r, plus prefix sum over s < r of the state term.
    suffix = tl.where(rt[:, None] <= rt[None, :], 1.0, 0.0)  # (r, t): t >= r
    prefix = tl.where(rt[:, None] > rt[None, :], 1.0, 0.0)  # (r, s): s < r
    db = q * (dq_inter + dq_strict) - k * dk_strict
    dg = tl.dot(suffix, db, input_precision="ieee")
    dg += tl.dot(prefix, k * dk_state, input_precision="ieee")
    dg += (tl.exp(b_last) * s_term)[None, :]

    tl.store(dq_ptr + offk, dq.to(dq_ptr.dtype.element_ty), mask=mk)
    tl.store(dk_ptr + offk, dk.to(dk_ptr.dtype.element_ty), mask=mk)
    tl.store(dg_ptr + offk, dg.to(dg_ptr.dtype.element_ty), mask=mk)
