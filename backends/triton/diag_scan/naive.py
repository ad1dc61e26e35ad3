"""Pure-torch reference of the diagonal scan kernel: a sequential loop over T."""

from __future__ import annotations

import torch
from torch import Tensor


def diag_scan_naive(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t, t = 0..T-1, h_{-1} = h0 (zeros if None).

    a, b: (B, T, *F); h0: (B, *F) or None. Returns h: (B, T, *F) in b's dtype,
    accumulated in float32 (or float64 for float64 inputs). Differentiable by autograd.
    """
    work = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    af, bf = a.to(work), b.to(work)
    h = torch.zeros_like(bf[:, 0]) if h0 is None else h0.to(work)
    out = []
    for a_t, b_t in zip(af.unbind(1), bf.unbind(1), strict=True):  # unbind: O(T) backward
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out, 1).to(b.dtype)
