"""Pure-torch reference of the delta-rule kernel: a step-by-step loop over T."""

from __future__ import annotations

import torch
from torch import Tensor


def delta_naive(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = q_t S_t``, t = 0..T-1.

    q, k: (B, H, T, dk); v: (B, H, T, dv); beta: (B, H, T); S0: (B, H, dk, dv) or None
    (zeros). Returns (o (B, H, T, dv) in v's dtype, S_T (B, H, dk, dv) in float32, or
    float64 for float64 inputs). Differentiable.
    """
    work = torch.float32
    for x in (q, k, v, beta, S0):
        if x is not None:
            work = torch.promote_types(work, x.dtype)
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    S = q.new_zeros(B, H, dk, dv, dtype=work) if S0 is None else S0.to(work)
    outs = []
    for t in range(T):
        k_t, v_t = k[:, :, t].to(work), v[:, :, t].to(work)
        err = v_t - torch.einsum("bhk,bhkv->bhv", k_t, S)  # what the memory gets wrong
        S = S + beta[:, :, t, None, None].to(work) * k_t.unsqueeze(-1) * err.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t].to(work), S))
    o = torch.stack(outs, 2) if outs else v.new_empty(B, H, 0, dv, dtype=work)
    return o.to(v.dtype), S
