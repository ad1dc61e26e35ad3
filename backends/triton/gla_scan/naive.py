"""Pure-torch reference of the GLA kernel: a step-by-step loop over T."""

from __future__ import annotations

import torch
from torch import Tensor


def gla_naive(
    q: Tensor, k: Tensor, v: Tensor, log_g: Tensor | None, S0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``S_t = diag(exp(log_g_t)) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``, t = 0..T-1.

    q, k: (B, H, T, dk); v: (B, H, T, dv); log_g: (B, H, T, dk) or None (g = 1);
    S0: (B, H, dk, dv) or None (zeros). Returns (o (B, H, T, dv) in v's dtype,
    S_T (B, H, dk, dv) in float32, or float64 for float64 inputs). Differentiable.
    """
    work = torch.float32
    for x in (q, k, v, log_g, S0):
        if x is not None:
            work = torch.promote_types(work, x.dtype)
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    S = q.new_zeros(B, H, dk, dv, dtype=work) if S0 is None else S0.to(work)
    lg = torch.zeros_like(q, dtype=work) if log_g is None else log_g.to(work)
    outs = []
    for t in range(T):
        S = lg[:, :, t].exp().unsqueeze(-1) * S + k[:, :, t].to(work).unsqueeze(-1) * v[:, :, t].to(
            work
        ).unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t].to(work), S))
    o = torch.stack(outs, 2) if outs else v.new_empty(B, H, 0, dv, dtype=work)
    return o.to(v.dtype), S
