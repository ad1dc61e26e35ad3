"""The 1-D pLSTM recurrence (Pöppel et al. 2025) in pure torch: a matrix state per head
with a signed scalar transition.

Shapes: q, k (B, H, T, dk); v (B, H, T, dv); trans (B, H, T); the state C is
(B, H, dk, dv). ``C_t = T_t C_{t-1} + k_t^T v_t``, ``o_t = q_t C_t``. The source gate
is folded into k and the mark gate applied to o by the caller (cells_plstm.py).

Unlike GLA's decay exp(log g) in (0, 1], a pLSTM transition may be negative (P-mode
keeps |T_t| <= 1 with a tanh), so products of transitions carry a sign. The chunked
form keeps the magnitude in log space, ``log|T|`` cumulated within a chunk, and the
sign as the parity of the number of negative factors, so no exp ever sees a positive
argument (the same overflow-safe scheme as scans/matrix.py's GLA chunks):

- intra-chunk: ``A[t, s] = (q_t . k_s) * (-1)^(p_t - p_s) * exp(b_t - b_s)`` for s < t,
  ``q_t . k_t`` on the diagonal, with b the cumulative log|T| and p the parity;
- inter-chunk: ``o_t += (q_t * P_t) C_start`` with ``P_t`` the chunk's prefix product,
  and ``C_end = P_C C_start + sum_s (prod_{r > s} T_r) k_s^T v_s``.

Modes: "sequential" (the step loop; the reference), "chunked" (matmuls inside chunks of
``chunk`` steps, a Python step per chunk), "auto" (sequential for T <= SHORT_T, else
chunked). Compute dtype float32, or float64 when an input is float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The argument checks, compute dtype, "auto" rule and padding of the matrix scans.
from archc.backends.torch.scans.matrix import _check, _pad_time, _resolve_mode, _work_dtype

__all__ = ["plstm_scan"]

# |T| is clamped below here before its log: a product through an exact zero is zero to
# float precision anyway, and the log stays finite.
_TINY = 1e-30


def plstm_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    trans: Tensor,
    S0: Tensor | None = None,
    *,
    mode: str = "chunked",
    chunk: int = 64,
) -> tuple[Tensor, Tensor]:
    """``C_t = trans_t C_{t-1} + k_t^T v_t``, ``o_t = q_t C_t`` per head.

    Args:
        q, k: (B, H, T, dk). v: (B, H, T, dv). trans: (B, H, T) transitions (any sign).
        S0: initial state (B, H, dk, dv) or None (zeros).
        mode: "auto" | "sequential" | "chunked". chunk: the chunked mode's length.

    Returns:
        (o (B, H, T, dv) in v's dtype, C_T (B, H, dk, dv) in the compute dtype).
    """
    _check("plstm_scan", q, k, v, S0, mode, chunk)
    if trans.shape != q.shape[:3]:
        raise ValueError(f"plstm_scan: trans {tuple(trans.shape)} is not (B, H, T)")
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    work = _work_dtype(q, k, v, trans, S0)
    qf, kf, vf, tf = q.to(work), k.to(work), v.to(work), trans.to(work)
    S = qf.new_zeros(B, H, dk, dv) if S0 is None else S0.to(work)
    if T == 0:
        return v.new_empty(B, H, 0, dv), S
    mode = _resolve_mode(mode, T)
    if mode == "sequential":
        o, S = _sequential(qf, kf, vf, tf, S)
    else:
        o, S = _chunked(qf, kf, vf, tf, S, chunk)
    return o.to(v.dtype), S


def _sequential(q: Tensor, k: Tensor, v: Tensor, tr: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    outs = []
    for q_t, k_t, v_t, a_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), tr.unbind(2), strict=True):
        S = a_t[..., None, None] * S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 2), S


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, tr: Tensor, S: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    C = min(chunk, T)
    N = -(-T // C)
    pad = N * C - T
    # Padding steps have k = v = 0 and T = 1: they leave the state unchanged.
    q, k, v = (_pad_time(x, pad) for x in (q, k, v))
    tr = F.pad(tr, (0, pad), value=1.0)
    qc, kc = q.reshape(B, H, N, C, dk), k.reshape(B, H, N, C, dk)
    vc = v.reshape(B, H, N, C, dv)
    trc = tr.reshape(B, H, N, C)
    la = trc.abs().clamp_min(_TINY).log()  # log|T| <= 0 for a bounded transition
    neg = (trc < 0).to(torch.int64)
    b = la.cumsum(-1)  # (B, H, N, C) cumulative log magnitude
    par = neg.cumsum(-1)  # number of negative factors so far
    sign_of = lambda p: 1.0 - 2.0 * (p % 2).to(q.dtype)  # noqa: E731

    # Intra-chunk: strictly lower part masked before the exp; the diagonal is exactly 1.
    tri = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    diff = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~tri, float("-inf"))
    D = diff.exp() * sign_of(par.unsqueeze(-1) - par.unsqueeze(-2))
    D = D + torch.eye(C, dtype=q.dtype, device=q.device)
    A = (qc @ kc.transpose(-1, -2)) * D  # (B, H, N, C, C)
    o = A @ vc

    # Inter-chunk: prefix products P_t and suffix products prod_{r > s} T_r.
    P = b.exp() * sign_of(par)  # (B, H, N, C)
    suf_log = F.pad(la[..., 1:], (0, 1)).flip(-1).cumsum(-1).flip(-1)
    suf_par = F.pad(neg[..., 1:], (0, 1)).flip(-1).cumsum(-1).flip(-1)
    suf = suf_log.exp() * sign_of(suf_par)
    U = (kc * suf.unsqueeze(-1)).transpose(-1, -2) @ vc  # (B, H, N, dk, dv)
    q_dec = qc * P.unsqueeze(-1)
    total = P[..., -1, None, None]  # (B, H, N, 1, 1) the whole chunk's product
    inter = []
    for i in range(N):
        inter.append(q_dec[:, :, i] @ S)
        S = total[:, :, i] * S + U[:, :, i]
    o = o + torch.stack(inter, 2)
    return o.reshape(B, H, N * C, dv)[:, :, :T], S
