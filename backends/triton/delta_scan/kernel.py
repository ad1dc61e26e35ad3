"""Triton kernels of the chunked delta rule (DeltaNet), forward and backward.

Recurrence (per batch-head): ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``,
``o_t = q_t S_t``. Layout: q, k contiguous (BH, T, DK); v, o (BH, T, DV); beta (BH, T);
S0, S_T (BH, DK, DV), S_T float32.

Chunked WY / UT-transform form (Yang et al. 2024). Within a chunk of BT steps with start
state S, ``A = tril(diag(beta) K K^T, -1)`` (strictly lower), ``M = (I + A)^-1`` (unit
lower triangular, by forward substitution in registers; ``delta_prep_kernel`` forms
every chunk's M in parallel before the sequential kernels run), ``W = M diag(beta) K``,
``U = M diag(beta) V``. Then the pseudo-values ``u = U - W S`` (row s is
beta_s (v_s - k_s S_{s-1})), ``o = Q S + tril(Q K^T) u`` and ``S' = S + K^T u``.

One program owns one batch-head and BV value columns (the state's columns evolve
independently: u, o and S' of a column block need only that block of V and S); the
whole key dimension is one tile (BK = next power of 2 >= DK, masked). Rows past T load
q = k = v = 0 and beta = 0: they leave the state unchanged. Everything accumulates in
float32; dots use input_precision="ieee".

Backward, like the GLA kernels (only the inputs are saved):
- ``delta_bwd_state_kernel`` (grid (cdiv(DV, BV), BH)) recomputes the chunk-start states
  into h (BH, NT, DK, DV), then runs the adjoint recurrence
  ``du = tril(Q K^T)^T do + K dS'``, ``dS = dS' + Q^T do - W^T du`` from the last chunk
  down (it needs no forward state), writing the chunk-end gradients to dh, and dS0.
- ``delta_bwd_grads_kernel`` (grid (NT, BH)) differentiates each chunk given h and dh,
  through ``u``, ``W``, ``U`` and the inverse: ``dL = -M^T dM M^T`` for M = L^-1.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _unit_lower_inverse(A, BT: tl.constexpr):
    """(I + A)^-1 for a strictly lower triangular (BT, BT) A, by forward substitution:
    row i of M is e_i - sum_{j<i} A[i, j] M[j, :], rows in increasing order."""
    rt = tl.arange(0, BT)
    M = tl.zeros((BT, BT), dtype=tl.float32)
    for i in range(BT):
        a = tl.sum(tl.where(rt[:, None] == i, A, 0.0), axis=0)  # row i of A (zero for j >= i)
        row = tl.where(rt == i, 1.0, 0.0) - tl.sum(a[:, None] * M, axis=0)
        M = tl.where(rt[:, None] == i, row[None, :], M)
    return M


@triton.jit
def delta_prep_kernel(k_ptr, beta_ptr, m_ptr, T, NT, DK, BK: tl.constexpr, BT: tl.constexpr):
    """M = (I + tril(diag(beta) K K^T, -1))^-1 of every chunk into m (BH, NT, BT, BT).

    Grid (NT, BH): the inverses do not depend on the state, so they are formed here in
    parallel over chunks instead of inside the sequential chunk loops."""
    c = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rk = tl.arange(0, BK)
    rt = tl.arange(0, BT)
    t = c * BT + rt
    t_ok = t < T
    mk = t_ok[:, None] & (rk < DK)[None, :]
    offk = pid_bh * T * DK + t[:, None].to(tl.int64) * DK + rk[None, :]
    k = tl.load(k_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + pid_bh * T + t, mask=t_ok, other=0.0).to(tl.float32)
    A = tl.dot(k * beta[:, None], tl.trans(k), input_precision="ieee")
    M = _unit_lower_inverse(tl.where(rt[:, None] > rt[None, :], A, 0.0), BT)
    tl.store(m_ptr + ((pid_bh * NT + c) * BT + rt[:, None]) * BT + rt[None, :], M)


@triton.jit
def _load_m(m_ptr, pid_bh, c, NT, BT: tl.constexpr):
    """The chunk's (BT, BT) inverse M written by delta_prep_kernel."""
    rt = tl.arange(0, BT)
    return tl.load(m_ptr + ((pid_bh * NT + c) * BT + rt[:, None]) * BT + rt[None, :])


@triton.jit
def delta_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    m_ptr,
    s0_ptr,
    o_ptr,
    sT_ptr,
    T,
    NT,
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
    causal = rt[:, None] >= rt[None, :]  # o_t reads S_t: s <= t

    if HAS_S0:
        S = tl.load(s0_ptr + s_offs, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)

    for c in range(0, NT):
        t = c * BT + rt
        t_ok = t < T
        tt = t[:, None].to(tl.int64)
        mk = t_ok[:, None] & k_ok[None, :]
        mv = t_ok[:, None] & v_ok[None, :]
        offk = qk_base + tt * DK + rk[None, :]
        offv = v_base + tt * DV + rv[None, :]
        q = tl.load(q_ptr + offk, mask=mk, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + offk, mask=mk, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offv, mask=mv, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + pid_bh * T + t, mask=t_ok, other=0.0).to(tl.float32)

        M = _load_m(m_ptr, pid_bh, c, NT, BT)
        W = tl.dot(M, k * beta[:, None], input_precision="ieee")
        u = tl.dot(M, v * beta[:, None], input_precision="ieee")
        u -= tl.dot(W, S, input_precision="ieee")
        QK = tl.where(causal, tl.dot(q, tl.trans(k), input_precision="ieee"), 0.0)
        o = tl.dot(q, S, input_precision="ieee") + tl.dot(QK, u, input_precision="ieee")
        tl.store(o_ptr + offv, o.to(o_ptr.dtype.element_ty), mask=mv)
        S += tl.dot(tl.trans(k), u, input_precision="ieee")

    tl.store(sT_ptr + s_offs, S, mask=s_mask)


@triton.jit
def delta_bwd_state_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    m_ptr,
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
    causal = rt[:, None] >= rt[None, :]

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
        v = tl.load(v_ptr + v_base + tt * DV + rv[None, :], mask=mv, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + pid_bh * T + t, mask=t_ok, other=0.0).to(tl.float32)
        M = _load_m(m_ptr, pid_bh, c, NT, BT)
        W = tl.dot(M, k * beta[:, None], input_precision="ieee")
        u = tl.dot(M, v * beta[:, None], input_precision="ieee")
        u -= tl.dot(W, S, input_precision="ieee")
        S += tl.dot(tl.trans(k), u, input_precision="ieee")

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
        k = tl.load(k_ptr + qk_base + tt * DK + rk[None, :], mask=mk, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + v_base + tt * DV + rv[None, :], mask=mv, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + pid_bh * T + t, mask=t_ok, other=0.0).to(tl.float32)
        W = tl.dot(_load_m(m_ptr, pid_bh, c, NT, BT), k * beta[:, None], input_precision="ieee")
        QK = tl.where(causal, tl.dot(q, tl.trans(k), input_precision="ieee"), 0.0)
        du = tl.dot(tl.trans(QK), do, input_precision="ieee")
        du += tl.dot(k, dS, input_precision="ieee")
        dS += tl.dot(tl.trans(q), do, input_precision="ieee")
        dS -= tl.dot(tl.trans(W), du, input_precision="ieee")
    tl.store(ds0_ptr + s_offs, dS, mask=s_mask)


@triton.jit
def delta_bwd_grads_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    beta_ptr,
    m_ptr,
    do_ptr,
    h_ptr,
    dh_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    dbeta_ptr,
    T,
    NT,
    DK,
    DV,
    BK: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
):
    """dq, dk, dv, dbeta of one chunk (c = program_id(0)) from h[c] and dh[c]."""
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
    causal = rt[:, None] >= rt[None, :]
    strict = rt[:, None] > rt[None, :]
    q = tl.load(q_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + offk, mask=mk, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + pid_bh * T + t, mask=t_ok, other=0.0).to(tl.float32)

    kb = k * beta[:, None]
    KK = tl.dot(k, tl.trans(k), input_precision="ieee")
    M = _load_m(m_ptr, pid_bh, c, NT, BT)
    W = tl.dot(M, kb, input_precision="ieee")
    QK = tl.where(causal, tl.dot(q, tl.trans(k), input_precision="ieee"), 0.0)

    dP = tl.zeros((BT, BT), dtype=tl.float32)  # do u^T (masked causal below)
    dM = tl.zeros((BT, BT), dtype=tl.float32)
    dq = tl.zeros((BT, BK), dtype=tl.float32)
    dk = tl.zeros((BT, BK), dtype=tl.float32)
    dW = tl.zeros((BT, BK), dtype=tl.float32)
    dbeta = tl.zeros((BT,), dtype=tl.float32)
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
        vb = v * beta[:, None]
        u = tl.dot(M, vb, input_precision="ieee") - tl.dot(W, S, input_precision="ieee")
        du = tl.dot(tl.trans(QK), do, input_precision="ieee")
        du += tl.dot(k, dS, input_precision="ieee")
        dP += tl.dot(do, tl.trans(u), input_precision="ieee")
        dq += tl.dot(do, tl.trans(S), input_precision="ieee")
        dk += tl.dot(u, tl.trans(dS), input_precision="ieee")  # from S' = S + K^T u
        dW -= tl.dot(du, tl.trans(S), input_precision="ieee")  # from u = U - W S
        dM += tl.dot(du, tl.trans(vb), input_precision="ieee")  # from U = M diag(beta) V
        Mt_du = tl.dot(tl.trans(M), du, input_precision="ieee")
        dbeta += tl.sum(v * Mt_du, axis=1)
        dv = Mt_du * beta[:, None]
        tl.store(dv_ptr + offv, dv.to(dv_ptr.dtype.element_ty), mask=mv)

    # o's intra-chunk term tril(Q K^T) u.
    dP = tl.where(causal, dP, 0.0)
    dq += tl.dot(dP, k, input_precision="ieee")
    dk += tl.dot(tl.trans(dP), q, input_precision="ieee")
    # W = M diag(beta) K.
    dM += tl.dot(dW, tl.trans(kb), input_precision="ieee")
    Mt_dW = tl.dot(tl.trans(M), dW, input_precision="ieee")
    dk += Mt_dW * beta[:, None]
    dbeta += tl.sum(k * Mt_dW, axis=1)
    # M = (I + A)^-1: dA = -M^T dM M^T on the strictly lower part; A = diag(beta) K K^T.
    Mt = tl.trans(M)
    dA = -tl.dot(tl.dot(Mt, dM, input_precision="ieee"), Mt, input_precision="ieee")
    dA = tl.where(strict, dA, 0.0)
    dbeta += tl.sum(dA * KK, axis=1)
    G = dA * beta[:, None]
    dk += tl.dot(G, k, input_precision="ieee") + tl.dot(tl.trans(G), k, input_precision="ieee")

    tl.store(dq_ptr + offk, dq.to(dq_ptr.dtype.element_ty), mask=mk)
    tl.store(dk_ptr + offk, dk.to(dk_ptr.dtype.element_ty), mask=mk)
    tl.store(dbeta_ptr + pid_bh * T + t, dbeta.to(dbeta_ptr.dtype.element_ty), mask=t_ok)
