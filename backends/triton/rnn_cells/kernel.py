"""Triton kernels of the fused sequential RNN cells (LSTM, GRU, leaky tau-RNN), fwd and bwd.

Only the sequential part runs here: the input projection xproj = x W_ih^T + b_ih for all
t is one big matmul done in torch beforehand (parallel over time). Every hidden unit of
step t needs all of h_{t-1}, so a program cannot own a hidden block; instead one program
owns a block of BLOCK_B batch rows and *all* H hidden units:

- the recurrent weight W_hh (G*H, H) is loaded once, as G tiles of (BLOCK_H, BLOCK_H), and
  stays in registers (spilled to L1 when large) for the whole time loop;
- h_{t-1} (and c_{t-1}) stay in registers as (BLOCK_B, BLOCK_H) tiles;
- step t is G tl.dot's of (BLOCK_B, BLOCK_H) x (BLOCK_H, BLOCK_H) plus the pointwise cell.

BLOCK_B >= 16 and BLOCK_H >= 16 because tl.dot needs every dimension >= 16: batch rows
and hidden units beyond B and H are masked (padded hidden units see zero weights and zero
inputs, so they stay exactly 0 and never leak into real units).

Backward walks time in reverse in the same layout, recomputing the gates from xproj and
the saved h sequence (fp32), and writes the gate pre-activation gradients; the weight
gradient dW_hh = sum_t dgates_t^T h_{t-1} is then one parallel matmul in torch (op.py),
which keeps a second set of G weight tiles out of the registers.

All layouts: xproj (B, T, G*H) contiguous, gate blocks in nn.LSTM / nn.GRU order;
h/c sequences (B, T, H) contiguous; W_hh (G*H, H) contiguous; states (B, H).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1: no overflow for large |x| (exp(-2x) -> inf gives -1).
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _load_wt(w_ptr, gate, H, offs_k, offs_j, mask_w):
    """Tile W_g^T: (BLOCK_H[k], BLOCK_H[j]) with W_g^T[k, j] = W_hh[gate*H + j, k]."""
    ptrs = w_ptr + (gate * H + offs_j[None, :]) * H + offs_k[:, None]
    return tl.load(ptrs, mask=mask_w, other=0.0).to(tl.float32)


@triton.jit
def _load_w(w_ptr, gate, H, offs_j, offs_k, mask_w):
    """Tile W_g: (BLOCK_H[j], BLOCK_H[k]) with W_g[j, k] = W_hh[gate*H + j, k]."""
    ptrs = w_ptr + (gate * H + offs_j[:, None]) * H + offs_k[None, :]
    return tl.load(ptrs, mask=mask_w, other=0.0).to(tl.float32)


# ----------------------------------------------------------------------------- LSTM


@triton.jit
def lstm_fwd_kernel(
    xproj_ptr,  # (B, T, 4H)
    w_ptr,  # (4H, H)
    h0_ptr,  # (B, H)
    c0_ptr,  # (B, H)
    y_ptr,  # (B, T, H)   h_t for every t
    cseq_ptr,  # (B, T, H) c_t for every t (fp32, for backward)
    hT_ptr,  # (B, H)
    cT_ptr,  # (B, H)
    B,
    T,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    # Weights loaded once, resident across all T steps.
    wi = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)
    wf = _load_wt(w_ptr, 1, H, offs_h, offs_h, mask_w)
    wg = _load_wt(w_ptr, 2, H, offs_h, offs_h, mask_w)
    wo = _load_wt(w_ptr, 3, H, offs_h, offs_h, mask_w)

    st = offs_b[:, None] * H + offs_h[None, :]
    h = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
    c = tl.load(c0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)

    G4 = 4 * H
    x_row = xproj_ptr + offs_b[:, None].to(tl.int64) * T * G4 + offs_h[None, :]
    o_row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for t in range(0, T):
        xp = x_row + t * G4
        ai = tl.load(xp, mask=mask_bh, other=0.0).to(tl.float32)
        af = tl.load(xp + H, mask=mask_bh, other=0.0).to(tl.float32)
        ag = tl.load(xp + 2 * H, mask=mask_bh, other=0.0).to(tl.float32)
        ao = tl.load(xp + 3 * H, mask=mask_bh, other=0.0).to(tl.float32)
        ai += tl.dot(h, wi, input_precision="ieee")
        af += tl.dot(h, wf, input_precision="ieee")
        ag += tl.dot(h, wg, input_precision="ieee")
        ao += tl.dot(h, wo, input_precision="ieee")
        i = _sigmoid(ai)
        f = _sigmoid(af)
        g = _tanh(ag)
        o = _sigmoid(ao)
        c = f * c + i * g
        h = o * _tanh(c)
        tl.store(y_ptr + o_row + t * H, h.to(y_ptr.dtype.element_ty), mask=mask_bh)
        tl.store(cseq_ptr + o_row + t * H, c, mask=mask_bh)

    tl.store(hT_ptr + st, h.to(hT_ptr.dtype.element_ty), mask=mask_bh)
    tl.store(cT_ptr + st, c.to(cT_ptr.dtype.element_ty), mask=mask_bh)


@triton.jit
def lstm_bwd_kernel(
    xproj_ptr,  # (B, T, 4H)
    w_ptr,  # (4H, H)
    h0_ptr,  # (B, H)
    c0_ptr,  # (B, H)
    y_ptr,  # (B, T, H)  saved h_t
    cseq_ptr,  # (B, T, H) saved c_t (fp32)
    dy_ptr,  # (B, T, H)
    dhT_ptr,  # (B, H)
    dcT_ptr,  # (B, H)
    dxproj_ptr,  # (B, T, 4H) out: gate pre-activation gradients (fp32)
    dh0_ptr,  # (B, H) out
    dc0_ptr,  # (B, H) out
    B,
    T,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    # W_g^T to recompute the gates, W_g to send gradients back to h_{t-1}.
    wti = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)
    wtf = _load_wt(w_ptr, 1, H, offs_h, offs_h, mask_w)
    wtg = _load_wt(w_ptr, 2, H, offs_h, offs_h, mask_w)
    wto = _load_wt(w_ptr, 3, H, offs_h, offs_h, mask_w)
    wi = tl.trans(wti)
    wf = tl.trans(wtf)
    wg = tl.trans(wtg)
    wo = tl.trans(wto)

    st = offs_b[:, None] * H + offs_h[None, :]
    dh = tl.load(dhT_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
    dc = tl.load(dcT_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)

    G4 = 4 * H
    x_row = offs_b[:, None].to(tl.int64) * T * G4 + offs_h[None, :]
    o_row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for tt in range(0, T):
        t = T - 1 - tt
        # Both branches must yield fp32: h0/c0 may be half while the saved sequences are fp32.
        if t > 0:
            h_prev = tl.load(y_ptr + o_row + (t - 1) * H, mask=mask_bh, other=0.0)
            h_prev = h_prev.to(tl.float32)
            c_prev = tl.load(cseq_ptr + o_row + (t - 1) * H, mask=mask_bh, other=0.0)
            c_prev = c_prev.to(tl.float32)
        else:
            h_prev = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
            c_prev = tl.load(c0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
        c = tl.load(cseq_ptr + o_row + t * H, mask=mask_bh, other=0.0).to(tl.float32)

        xp = xproj_ptr + x_row + t * G4
        ai = tl.load(xp, mask=mask_bh, other=0.0).to(tl.float32)
        af = tl.load(xp + H, mask=mask_bh, other=0.0).to(tl.float32)
        ag = tl.load(xp + 2 * H, mask=mask_bh, other=0.0).to(tl.float32)
        ao = tl.load(xp + 3 * H, mask=mask_bh, other=0.0).to(tl.float32)
        ai += tl.dot(h_prev, wti, input_precision="ieee")
        af += tl.dot(h_prev, wtf, input_precision="ieee")
        ag += tl.dot(h_prev, wtg, input_precision="ieee")
        ao += tl.dot(h_prev, wto, input_precision="ieee")
        i = _sigmoid(ai)
        f = _sigmoid(af)
        g = _tanh(ag)
        o = _sigmoid(ao)
        tc = _tanh(c)

        dh += tl.load(dy_ptr + o_row + t * H, mask=mask_bh, other=0.0).to(tl.float32)
        dc += dh * o * (1.0 - tc * tc)
        dai = dc * g * i * (1.0 - i)
        daf = dc * c_prev * f * (1.0 - f)
        dag = dc * i * (1.0 - g * g)
        dao = dh * tc * o * (1.0 - o)

        dp = dxproj_ptr + x_row + t * G4
        tl.store(dp, dai, mask=mask_bh)
        tl.store(dp + H, daf, mask=mask_bh)
        tl.store(dp + 2 * H, dag, mask=mask_bh)
        tl.store(dp + 3 * H, dao, mask=mask_bh)

        dc = dc * f
        dh = tl.dot(dai, wi, input_precision="ieee")
        dh += tl.dot(daf, wf, input_precision="ieee")
        dh += tl.dot(dag, wg, input_precision="ieee")
        dh += tl.dot(dao, wo, input_precision="ieee")

    tl.store(dh0_ptr + st, dh, mask=mask_bh)
    tl.store(dc0_ptr + st, dc, mask=mask_bh)


# ----------------------------------------------------------------------------- GRU


@triton.jit
def gru_fwd_kernel(
    xproj_ptr,  # (B, T, 3H) = x W_ih^T + b_ih
    w_ptr,  # (3H, H)
    bhh_ptr,  # (3H,)
    h0_ptr,  # (B, H)
    y_ptr,  # (B, T, H)
    hT_ptr,  # (B, H)
    B,
    T,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    wr = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)
    wz = _load_wt(w_ptr, 1, H, offs_h, offs_h, mask_w)
    wn = _load_wt(w_ptr, 2, H, offs_h, offs_h, mask_w)
    br = tl.load(bhh_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]
    bz = tl.load(bhh_ptr + H + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]
    bn = tl.load(bhh_ptr + 2 * H + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]

    st = offs_b[:, None] * H + offs_h[None, :]
    h = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)

    G3 = 3 * H
    x_row = xproj_ptr + offs_b[:, None].to(tl.int64) * T * G3 + offs_h[None, :]
    o_row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for t in range(0, T):
        xp = x_row + t * G3
        xr = tl.load(xp, mask=mask_bh, other=0.0).to(tl.float32)
        xz = tl.load(xp + H, mask=mask_bh, other=0.0).to(tl.float32)
        xn = tl.load(xp + 2 * H, mask=mask_bh, other=0.0).to(tl.float32)
        r = _sigmoid(xr + tl.dot(h, wr, input_precision="ieee") + br)
        z = _sigmoid(xz + tl.dot(h, wz, input_precision="ieee") + bz)
        hn = tl.dot(h, wn, input_precision="ieee") + bn  # b_hn inside r * (...), as nn.GRU
        n = _tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        tl.store(y_ptr + o_row + t * H, h.to(y_ptr.dtype.element_ty), mask=mask_bh)

    tl.store(hT_ptr + st, h.to(hT_ptr.dtype.element_ty), mask=mask_bh)


@triton.jit
def gru_bwd_kernel(
    xproj_ptr,  # (B, T, 3H)
    w_ptr,  # (3H, H)
    bhh_ptr,  # (3H,)
    h0_ptr,  # (B, H)
    y_ptr,  # (B, T, H) saved h_t
    dy_ptr,  # (B, T, H)
    dhT_ptr,  # (B, H)
    dxproj_ptr,  # (B, T, 3H) out: d(xproj) (fp32)
    dghh_ptr,  # (B, T, 3H) out: d(h W_hh^T + b_hh) (fp32); differs from dxproj on n
    dh0_ptr,  # (B, H) out
    B,
    T,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    wtr = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)
    wtz = _load_wt(w_ptr, 1, H, offs_h, offs_h, mask_w)
    wtn = _load_wt(w_ptr, 2, H, offs_h, offs_h, mask_w)
    wr = tl.trans(wtr)
    wz = tl.trans(wtz)
    wn = tl.trans(wtn)
    br = tl.load(bhh_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]
    bz = tl.load(bhh_ptr + H + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]
    bn = tl.load(bhh_ptr + 2 * H + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]

    st = offs_b[:, None] * H + offs_h[None, :]
    dh = tl.load(dhT_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)

    G3 = 3 * H
    x_row = offs_b[:, None].to(tl.int64) * T * G3 + offs_h[None, :]
    o_row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for tt in range(0, T):
        t = T - 1 - tt
        # Both branches must yield fp32: h0 may be half while the saved sequence is fp32.
        if t > 0:
            h_prev = tl.load(y_ptr + o_row + (t - 1) * H, mask=mask_bh, other=0.0)
            h_prev = h_prev.to(tl.float32)
        else:
            h_prev = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)

        xp = xproj_ptr + x_row + t * G3
        xr = tl.load(xp, mask=mask_bh, other=0.0).to(tl.float32)
        xz = tl.load(xp + H, mask=mask_bh, other=0.0).to(tl.float32)
        xn = tl.load(xp + 2 * H, mask=mask_bh, other=0.0).to(tl.float32)
        r = _sigmoid(xr + tl.dot(h_prev, wtr, input_precision="ieee") + br)
        z = _sigmoid(xz + tl.dot(h_prev, wtz, input_precision="ieee") + bz)
        hn = tl.dot(h_prev, wtn, input_precision="ieee") + bn
        n = _tanh(xn + r * hn)

        dh += tl.load(dy_ptr + o_row + t * H, mask=mask_bh, other=0.0).to(tl.float32)
        dan = dh * (1.0 - z) * (1.0 - n * n)
        daz = dh * (h_prev - n) * z * (1.0 - z)
        dar = dan * hn * r * (1.0 - r)
        dhn = dan * r

        dp = dxproj_ptr + x_row + t * G3
        tl.store(dp, dar, mask=mask_bh)
        tl.store(dp + H, daz, mask=mask_bh)
        tl.store(dp + 2 * H, dan, mask=mask_bh)
        gp = dghh_ptr + x_row + t * G3
        tl.store(gp, dar, mask=mask_bh)
        tl.store(gp + H, daz, mask=mask_bh)
        tl.store(gp + 2 * H, dhn, mask=mask_bh)

        dh = dh * z
        dh += tl.dot(dar, wr, input_precision="ieee")
        dh += tl.dot(daz, wz, input_precision="ieee")
        dh += tl.dot(dhn, wn, input_precision="ieee")

    tl.store(dh0_ptr + st, dh, mask=mask_bh)


# ----------------------------------------------------------------------------- leaky (tau) RNN


@triton.jit
def _act(a, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(a, 0.0)
    else:
        return _tanh(a)


@triton.jit
def leaky_fwd_kernel(
    u_ptr,  # (B, T, H) = x W_ih^T + b
    w_ptr,  # (H, H)
    alpha_ptr,  # (H,) = 1 / tau
    h0_ptr,  # (B, H)
    y_ptr,  # (B, T, H) h_t for every t
    hT_ptr,  # (B, H)
    B,
    T,
    H,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    # h_t = h_{t-1} + alpha * (act(u_t + h_{t-1} W^T) - h_{t-1}); padded units get
    # alpha = 0 and zero weights, so they stay exactly 0.
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    wt = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)
    alpha = tl.load(alpha_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]

    st = offs_b[:, None] * H + offs_h[None, :]
    h = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
    row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for t in range(0, T):
        a = tl.load(u_ptr + row + t * H, mask=mask_bh, other=0.0).to(tl.float32)
        a += tl.dot(h, wt, input_precision="ieee")
        h = h + alpha * (_act(a, RELU) - h)
        tl.store(y_ptr + row + t * H, h.to(y_ptr.dtype.element_ty), mask=mask_bh)

    tl.store(hT_ptr + st, h.to(hT_ptr.dtype.element_ty), mask=mask_bh)


@triton.jit
def leaky_bwd_kernel(
    u_ptr,  # (B, T, H)
    w_ptr,  # (H, H)
    alpha_ptr,  # (H,)
    h0_ptr,  # (B, H)
    y_ptr,  # (B, T, H) saved h_t (fp32)
    dy_ptr,  # (B, T, H)
    dhT_ptr,  # (B, H)
    du_ptr,  # (B, T, H) out: d(pre-activation) = du (fp32)
    dalpha_ptr,  # (B, H) out: per-row sum over t of dh_t * (act_t - h_{t-1}) (fp32)
    dh0_ptr,  # (B, H) out
    B,
    T,
    H,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask_bh = mask_b[:, None] & mask_h[None, :]
    mask_w = mask_h[:, None] & mask_h[None, :]

    wt = _load_wt(w_ptr, 0, H, offs_h, offs_h, mask_w)  # recompute a_t = u_t + h W^T
    w = tl.trans(wt)  # send da_t back to h_{t-1}: da_t W
    alpha = tl.load(alpha_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]

    st = offs_b[:, None] * H + offs_h[None, :]
    dh = tl.load(dhT_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
    dalpha = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    row = offs_b[:, None].to(tl.int64) * T * H + offs_h[None, :]
    for tt in range(0, T):
        t = T - 1 - tt
        # Both branches must yield fp32: h0 may be half while the saved sequence is fp32.
        if t > 0:
            h_prev = tl.load(y_ptr + row + (t - 1) * H, mask=mask_bh, other=0.0)
            h_prev = h_prev.to(tl.float32)
        else:
            h_prev = tl.load(h0_ptr + st, mask=mask_bh, other=0.0).to(tl.float32)
        a = tl.load(u_ptr + row + t * H, mask=mask_bh, other=0.0).to(tl.float32)
        a += tl.dot(h_prev, wt, input_precision="ieee")
        s = _act(a, RELU)

        dh += tl.load(dy_ptr + row + t * H, mask=mask_bh, other=0.0).to(tl.float32)
        dalpha += dh * (s - h_prev)
        if RELU:
            da = tl.where(a > 0.0, dh * alpha, 0.0)
        else:
            da = dh * alpha * (1.0 - s * s)
        tl.store(du_ptr + row + t * H, da, mask=mask_bh)
        dh = dh * (1.0 - alpha) + tl.dot(da, w, input_precision="ieee")

    tl.store(dh0_ptr + st, dh, mask=mask_bh)
    tl.store(dalpha_ptr + st, dalpha, mask=mask_bh)
