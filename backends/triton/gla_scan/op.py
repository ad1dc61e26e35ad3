"""Autograd op and lowering rule of the Triton chunked GLA kernels.

``gla_chunked(q, k, v, log_g, S0)`` runs the kernels of kernel.py, forward and backward
(all Triton). The forward saves only its inputs; the backward recomputes the chunk-start
states in fp32 (one extra pass over the sequence) and then differentiates every chunk in
parallel. ``can_lower`` says whether the kernels apply to a (device, dtype, shape) and
why not; ``use_kernel`` also logs a refusal once (the caller then runs the torch path).
``gla_fwd`` / ``gla_bwd`` write into caller-provided buffers so tests can pre-fill them
with NaN. The kernels are torch.library custom ops (``torch.ops.archc.gla_fwd`` /
``gla_bwd``, fake impls, registered autograd), so torch.compile traces around them. The
backward is not itself differentiable (no double backward; the torch modes have it).
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton import matrix_ops
from archc.backends.triton.gla_scan.kernel import (
    gla_bwd_grads_kernel,
    gla_bwd_state_kernel,
    gla_fwd_kernel,
)
from archc.backends.triton.matrix_ops import register_matrix_scan

__all__ = ["can_lower", "gla_bwd", "gla_chunked", "gla_fwd", "use_kernel"]


# GPU configs; the autotune key is (DK, DV) only, never T: a new sequence length must
# not re-tune. Every launch fully overwrites o and S_T, so autotuning's repeated
# launches are harmless.
_CONFIGS = [
    triton.Config({"BT": bt, "BV": bv}, num_warps=w)
    for bt, bv, w in [(16, 32, 4), (16, 64, 4), (32, 32, 4), (32, 64, 8), (16, 128, 8)]
]
_fwd_tuned = triton.autotune(configs=_CONFIGS, key=["DK", "DV"])(gla_fwd_kernel)

# The backward's two kernels share the per-chunk buffers h / dh, so their chunk length is
# one fixed value; 16 keeps the (BT, BT, BK) decay tile within registers at dk = 128.
_BWD_BT = 16
_BWD_CONFIGS = [
    triton.Config({"BV": bv}, num_warps=w) for bv, w in [(16, 4), (32, 4), (64, 4), (64, 8)]
]
_bwd_state_tuned = triton.autotune(configs=_BWD_CONFIGS, key=["DK", "DV"])(gla_bwd_state_kernel)
_bwd_grads_tuned = triton.autotune(configs=_BWD_CONFIGS, key=["DK", "DV"])(gla_bwd_grads_kernel)


def can_lower(
    device: torch.device | str, dtype: torch.dtype, shape: tuple[int, ...]
) -> tuple[bool, str]:
    """Whether the kernels handle inputs on ``device`` of ``dtype`` and shape (B, H, T, dk, dv);
    (ok, reason). The rule is shared with the other matrix scan (matrix_ops.py)."""
    return matrix_ops.can_lower(device, dtype, shape)


def use_kernel(
    device: torch.device | str, dtypes: list[torch.dtype], shape: tuple[int, ...]
) -> bool:
    """can_lower for every input dtype; a refusal is logged once with its reason."""
    return matrix_ops.use_kernel("gla_scan", device, dtypes, shape)


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


def gla_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_g: Tensor,
    S0: Tensor | None,
    do: Tensor,
    dS_T: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dlog_g: Tensor,
    dS0: Tensor,
) -> None:
    """Launch the backward kernels.

    Inputs as in :func:`gla_fwd`; do: contiguous (B, H, T, dv); dS_T: contiguous
    (B, H, dk, dv). Writes dq, dk, dlog_g (B, H, T, dk), dv (B, H, T, dv) and dS0
    (B, H, dk, dv), all contiguous (dS0 is written even when S0 is None).
    """
    B, H, T, D_K = q.shape
    D_V = v.shape[-1]
    BH = B * H
    BT = _BWD_BT
    NT = triton.cdiv(T, BT)
    # Per-chunk states and their gradients, fp32 (recomputed, never saved by the forward).
    h = torch.empty(BH, NT, D_K, D_V, dtype=torch.float32, device=q.device)
    dh = torch.empty_like(h)
    s0_arg = S0 if S0 is not None else dS0  # never read when HAS_S0 is False
    st_args = (q, k, v, log_g, s0_arg, do, dS_T, h, dh, dS0, T, NT, D_K, D_V)
    gr_args = (q, k, v, log_g, do, h, dh, dq, dk, dv, dlog_g, T, NT, D_K, D_V)
    if q.device.type == "cpu":  # interpreter: one fixed config
        BV = min(32, max(16, triton.next_power_of_2(D_V)))
        gla_bwd_state_kernel[(triton.cdiv(D_V, BV), BH)](
            *st_args, HAS_S0=S0 is not None, BK=_block_k(D_K), BT=BT, BV=BV
        )
        gla_bwd_grads_kernel[(NT, BH)](*gr_args, BK=_block_k(D_K), BT=BT, BV=BV)
    else:
        grid = lambda m: (triton.cdiv(D_V, m["BV"]), BH)  # noqa: E731
        _bwd_state_tuned[grid](*st_args, HAS_S0=S0 is not None, BK=_block_k(D_K), BT=BT)
        _bwd_grads_tuned[(NT, BH)](*gr_args, BK=_block_k(D_K), BT=BT)


# torch.ops.archc.gla_fwd / gla_bwd: custom ops so torch.compile traces around them.
_gla_op = register_matrix_scan("gla", gla_fwd, gla_bwd)


def gla_chunked(
    q: Tensor, k: Tensor, v: Tensor, log_g: Tensor | None, S0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked gated linear attention with the Triton forward kernel (differentiable).

    q, k: (B, H, T, dk); v: (B, H, T, dv); log_g: (B, H, T, dk) log decays (<= 0,
    finite) or None for plain linear attention; S0: (B, H, dk, dv) or None (zeros).
    Returns (o (B, H, T, dv) in v's dtype, S_T (B, H, dk, dv) float32). Accumulates in
    float32; the backward recomputes the chunk states (see module doc).
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
    return _gla_op(q.contiguous(), k.contiguous(), v.contiguous(), log_g.contiguous(), S0c)
