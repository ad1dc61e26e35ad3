"""Autograd op and lowering rule of the Triton chunked GLA kernel.

``gla_chunked(q, k, v, log_g, S0)`` runs the forward kernel of kernel.py. The backward
is NOT a Triton kernel yet: it recomputes the forward with the torch chunked path
(``archc.backends.torch.scans.matrix.gla_scan``, float32) and differentiates it with
autograd. ``can_lower`` says whether the kernel applies to a (device, dtype, shape) and
why not. ``gla_fwd`` writes into caller-provided buffers so tests can pre-fill them
with NaN.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton.gla_scan.kernel import gla_fwd_kernel

__all__ = ["can_lower", "gla_chunked", "gla_fwd"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The whole key dimension is one register tile and the intra-chunk scores are a
# (BT, BT, BK) tile: beyond 128 key dims that spills far too much.
_MAX_DK = 128

# GPU configs; the autotune key is (DK, DV) only, never T: a new sequence length must
# not re-tune. Every launch fully overwrites o and S_T, so autotuning's repeated
# launches are harmless.
_CONFIGS = [
    triton.Config({"BT": bt, "BV": bv}, num_warps=w)
    for bt, bv, w in [(16, 32, 4), (16, 64, 4), (32, 32, 4), (32, 64, 8), (16, 128, 8)]
]
_fwd_tuned = triton.autotune(configs=_CONFIGS, key=["DK", "DV"])(gla_fwd_kernel)


def can_lower(
    device: torch.device | str, dtype: torch.dtype, shape: tuple[int, ...]
) -> tuple[bool, str]:
    """Whether the kernel handles inputs on ``device`` of ``dtype`` and shape (B, H, T, dk, dv).

    Returns (ok, reason); ``reason`` says why not (the caller logs it once).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"device is {device.type}, the kernel needs CUDA"
    if dtype not in _DTYPES:
        return False, f"dtype {dtype} not in float32/float16/bfloat16"
    if len(shape) != 5:
        return False, f"shape {shape} is not (B, H, T, dk, dv)"
    if any(s == 0 for s in shape):
        return False, f"empty shape {shape}"
    B, H, _, dk, dv = shape
    if dk > _MAX_DK:
        return False, f"dk={dk} > {_MAX_DK}: the key dimension is held in one register tile"
    if triton.cdiv(dv, 16) > 65535:  # grid axis 0 is the value blocks (limit 2**31 - 1)
        return False, f"dv={dv} exceeds the grid limit"
    if B * H > 65535:  # grid axis 1
        return False, f"B*H={B * H} exceeds the grid's axis-1 limit of 65535"
    return True, "ok"


def _block_k(dk: int) -> int:
    return max(16, triton.next_power_of_2(dk))  # tl.dot needs every dim >= 16


def gla_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_g: Tensor,
    S0: Tensor | None,
    o: Tensor,
    S_T: Tensor,
) -> None:
    """Launch the forward kernel.

    q, k, log_g: contiguous (B, H, T, dk); v, o: contiguous (B, H, T, dv);
    S0: contiguous (B, H, dk, dv) or None; S_T: contiguous float32 (B, H, dk, dv).
    """
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    BH = B * H
    s0_arg = S0 if S0 is not None else S_T  # never read when HAS_S0 is False
    args = (q, k, v, log_g, s0_arg, o, S_T, T, dk, dv)
    if q.device.type == "cpu":
        # Under TRITON_INTERPRET=1: one small fixed config (autotuning would only
        # multiply the interpreter's run time).
        BV = min(32, max(16, triton.next_power_of_2(dv)))
        grid = (triton.cdiv(dv, BV), BH)
        gla_fwd_kernel[grid](*args, HAS_S0=S0 is not None, BK=_block_k(dk), BT=16, BV=BV)
    else:
        grid = lambda m: (triton.cdiv(dv, m["BV"]), BH)  # noqa: E731
        _fwd_tuned[grid](*args, HAS_S0=S0 is not None, BK=_block_k(dk))


class _GLAChunked(torch.autograd.Function):
    """(o, S_T) = GLA(q, k, v, log_g, S0). Forward: Triton. Backward: recompute with the
    torch chunked path in float32 and differentiate it (saves only the inputs)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, q: Tensor, k: Tensor, v: Tensor, log_g: Tensor, S0: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        B, H, _, dk = q.shape
        o = torch.empty_like(v)
        S_T = torch.empty(B, H, dk, v.shape[-1], dtype=torch.float32, device=v.device)
        gla_fwd(q, k, v, log_g, S0, o, S_T)
        ctx.has_s0 = S0 is not None
        ctx.save_for_backward(q, k, v, log_g, S0 if S0 is not None else q.new_empty(0))
        return o, S_T

    @staticmethod
    def backward(ctx, go: Tensor, gS: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        # Imported here: the torch path is only needed for gradients.
        from archc.backends.torch.scans.matrix import gla_scan

        q, k, v, log_g, S0 = ctx.saved_tensors
        ins = [q, k, v, log_g] + ([S0] if ctx.has_s0 else [])
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in ins]
            S0_leaf = leaves[4] if ctx.has_s0 else None
            o, S_T = gla_scan(*leaves[:4], S0_leaf, mode="chunked")
            grads = torch.autograd.grad((o, S_T), leaves, (go, gS.to(S_T.dtype)))
        grads = [g.to(x.dtype) for g, x in zip(grads, ins, strict=True)]
        return (*grads[:4], grads[4] if ctx.has_s0 else None)


def gla_chunked(
    q: Tensor, k: Tensor, v: Tensor, log_g: Tensor | None, S0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked gated linear attention with the Triton forward kernel (differentiable).

    q, k: (B, H, T, dk); v: (B, H, T, dv); log_g: (B, H, T, dk) log decays (<= 0,
    finite) or None for plain linear attention; S0: (B, H, dk, dv) or None (zeros).
    Returns (o (B, H, T, dv) in v's dtype, S_T (B, H, dk, dv) float32). Accumulates in
    float32. The backward recomputes through the torch chunked path (see module doc).
    """
    if k.shape != q.shape or v.shape[:3] != q.shape[:3] or q.dim() != 4:
        raise ValueError(
            f"gla_chunked: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "must be (B, H, T, dk), (B, H, T, dk), (B, H, T, dv)"
        )
    if log_g is None:
        log_g = torch.zeros_like(q)
    if log_g.shape != q.shape:
        raise ValueError(f"gla_chunked: log_g {tuple(log_g.shape)} is not {tuple(q.shape)}")
    B, H, _, dk = q.shape
    if S0 is not None and S0.shape != (B, H, dk, v.shape[-1]):
        raise ValueError(f"gla_chunked: S0 {tuple(S0.shape)} is not (B, H, dk, dv)")
    S0c = S0.contiguous() if S0 is not None else None
    return _GLAChunked.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), log_g.contiguous(), S0c
    )
