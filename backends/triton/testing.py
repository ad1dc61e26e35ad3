"""Accuracy measure shared by the kernel tests (CPU interpreter and tests/gpu)."""

from __future__ import annotations

import torch


def rel_rms(x: torch.Tensor, ref: torch.Tensor, floor: float = 1e-30) -> float:
    """Relative RMS error ||x - ref||_rms / ||ref||_rms in float64; `floor` bounds the
    denominator (a reference that is exactly 0 where `x` holds rounding noise)."""
    x, ref = x.double(), ref.double()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(floor)).item()
