"""Triton forward kernel of chunked gated linear attention (GLA).

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
