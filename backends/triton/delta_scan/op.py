"""Autograd op and lowering rule of the Triton chunked delta-rule kernels.

``delta_chunked(q, k, v, beta, S0)`` runs the kernels of kernel.py, forward and backward
(all Triton, no torch fallback inside). Both first form every chunk's triangular inverse
in parallel (a small (B*H, T/16, 16, 16) buffer). The forward saves only its inputs; the
backward recomputes the inverses and the chunk-start states in fp32 (one extra pass over
the sequence), runs the adjoint state recurrence, then differentiates every chunk in
parallel. ``can_lower`` says whether the kernels apply to a (device, dtype, shape) and
why not; ``use_kernel`` also logs a refusal once (the caller then runs the torch path).
``delta_fwd`` / ``delta_bwd`` write into caller-provided buffers so tests can pre-fill
them with NaN. The kernels are torch.library custom ops (``torch.ops.archc.delta_fwd`` /
``delta_bwd``, fake impls, registered autograd), so torch.compile traces around them.
The backward is not itself differentiable (no double backward; the torch modes have it).
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton import matrix_ops
from archc.backends.triton.delta_scan.kernel import (
    delta_bwd_grads_kernel,
    delta_bwd_state_kernel,
    delta_fwd_kernel,
    delta_prep_kernel,
)
from archc.backends.triton.matrix_ops import register_matrix_scan

__all__ = ["can_lower", "delta_bwd", "delta_chunked", "delta_fwd", "use_kernel"]


# Chunk length. The triangular inverse is BT sequential row updates per chunk, and the
# backward's kernels share per-chunk buffers, so it is one fixed value for all kernels.
_BT = 16

# GPU configs; the autotune key is (DK, DV) only, never T. Every launch fully overwrites
# its outputs, so autotuning's repeated launches are harmless.
_CONFIGS = [
    triton.Config({"BV": bv}, num_warps=w) for bv, w in [(16, 4), (32, 4), (64, 4), (64, 8)]
]
_fwd_tuned = triton.autotune(configs=_CONFIGS, key=["DK", "DV"])(delta_fwd_kernel)
_bwd_state_tuned = triton.autotune(configs=_CONFIGS, key=["DK", "DV"])(delta_bwd_state_kernel)
_bwd_grads_tuned = triton.autotune(configs=_CONFIGS, key=["DK", "DV"])(delta_bwd_grads_kernel)


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
    return matrix_ops.use_kernel("delta_scan", device, dtypes, shape)


def _block_k(dk: int) -> int:
    return max(16, triton.next_power_of_2(dk))  # tl.dot needs every dim >= 16


def _block_v_cpu(dv: int) -> int:
    # Under TRITON_INTERPRET=1: one small fixed config (autotuning would only multiply
    # the interpreter's run time).
    return min(32, max(16, triton.next_power_of_2(dv)))


def _inverses(k: Tensor, beta: Tensor) -> Tensor:
    """Every chunk's (BT, BT) inverse M, (B*H, NT, BT, BT) float32 (see kernel.py)."""
    B, H, T, D_K = k.shape
    NT = triton.cdiv(T, _BT)
    m = torch.empty(B * H, NT, _BT, _BT, dtype=torch.float32, device=k.device)
    delta_prep_kernel[(NT, B * H)](k, beta, m, T, NT, D_K, BK=_block_k(D_K), BT=_BT)
    return m


def delta_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    S0: Tensor | None,
    o: Tensor,
    S_T: Tensor,
) -> None:
    """Launch the forward kernel.

    q, k: contiguous (B, H, T, dk); v, o: contiguous (B, H, T, dv); beta: contiguous
    (B, H, T); S0: contiguous (B, H, dk, dv) or None; S_T: contiguous float32 (B, H, dk, dv).
    """
    B, H, T, D_K = q.shape
    D_V = v.shape[-1]
    BH = B * H
    NT = triton.cdiv(T, _BT)
    m = _inverses(k, beta)
    s0_arg = S0 if S0 is not None else S_T  # never read when HAS_S0 is False
    args = (q, k, v, beta, m, s0_arg, o, S_T, T, NT, D_K, D_V)
    meta = {"HAS_S0": S0 is not None, "BK": _block_k(D_K), "BT": _BT}
    if q.device.type == "cpu":
        BV = _block_v_cpu(D_V)
        delta_fwd_kernel[(triton.cdiv(D_V, BV), BH)](*args, **meta, BV=BV)
    else:
        _fwd_tuned[lambda m: (triton.cdiv(D_V, m["BV"]), BH)](*args, **meta)


def delta_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    S0: Tensor | None,
    do: Tensor,
    dS_T: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dbeta: Tensor,
    dS0: Tensor,
) -> None:
    """Launch the backward kernels.

    Inputs as in :func:`delta_fwd`; do: contiguous (B, H, T, dv); dS_T: contiguous
    (B, H, dk, dv). Writes dq, dk (B, H, T, dk), dv (B, H, T, dv), dbeta (B, H, T) and
    dS0 (B, H, dk, dv), all contiguous (dS0 is written even when S0 is None).
    """
    B, H, T, D_K = q.shape
    D_V = v.shape[-1]
    BH = B * H
    NT = triton.cdiv(T, _BT)
    # Per-chunk states and their gradients, fp32 (recomputed, never saved by the forward).
    h = torch.empty(BH, NT, D_K, D_V, dtype=torch.float32, device=q.device)
    dh = torch.empty_like(h)
    m = _inverses(k, beta)
    s0_arg = S0 if S0 is not None else dS0  # never read when HAS_S0 is False
    st_args = (q, k, v, beta, m, s0_arg, do, dS_T, h, dh, dS0, T, NT, D_K, D_V)
    gr_args = (q, k, v, beta, m, do, h, dh, dq, dk, dv, dbeta, T, NT, D_K, D_V)
    meta = {"BK": _block_k(D_K), "BT": _BT}
    if q.device.type == "cpu":
        BV = _block_v_cpu(D_V)
        delta_bwd_state_kernel[(triton.cdiv(D_V, BV), BH)](
            *st_args, HAS_S0=S0 is not None, **meta, BV=BV
        )
        delta_bwd_grads_kernel[(NT, BH)](*gr_args, **meta, BV=BV)
    else:
        grid = lambda m: (triton.cdiv(D_V, m["BV"]), BH)  # noqa: E731
        _bwd_state_tuned[grid](*st_args, HAS_S0=S0 is not None, **meta)
        _bwd_grads_tuned[(NT, BH)](*gr_args, **meta)


# torch.ops.archc.delta_fwd / delta_bwd: custom ops so torch.compile traces around them.
_delta_op = register_matrix_scan("delta", delta_fwd, delta_bwd)


def delta_chunked(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked delta rule with the Triton kernels (differentiable).

    q, k: (B, H, T, dk), k L2-normalised by the caller as DeltaNet does (the recurrence
    is then contractive for beta in [0, 1]); v: (B, H, T, dv); beta: (B, H, T);
    S0: (B, H, dk, dv) or None (zeros). Returns (o (B, H, T, dv) in v's dtype,
    S_T (B, H, dk, dv) float32). Accumulates in float32.
    """
    if k.shape != q.shape or v.shape[:3] != q.shape[:3] or q.dim() != 4:
        raise ValueError(
            f"delta_chunked: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "must be (B, H, T, dk), (B, H, T, dk), (B, H, T, dv)"
        )
    if beta.shape != q.shape[:3]:
        raise ValueError(f"delta_chunked: beta {tuple(beta.shape)} is not (B, H, T)")
    B, H, _, dk = q.shape
    if S0 is not None and S0.shape != (B, H, dk, v.shape[-1]):
        raise ValueError(f"delta_chunked: S0 {tuple(S0.shape)} is not (B, H, dk, dv)")
    S0c = S0.contiguous() if S0 is not None else None
    return _delta_op(q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous(), S0c)
