"""Autograd op and lowering rule of the Triton diagonal scan.

``diag_scan(a, b, h0)`` computes h_t = a_t * h_{t-1} + b_t over dim 1 with the kernels
of kernel.py, forward and backward. ``can_lower`` says whether the kernel applies to a
(device, dtype, shape) and why not. Underneath is the torch.library custom op
``torch.ops.archc.diag_scan`` (autograd registered), so torch.compile traces around it.
Launch helpers ``diag_scan_fwd`` / ``diag_scan_bwd`` write into caller-provided buffers
so tests can pre-fill them with NaN.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton.diag_scan.kernel import diag_scan_bwd_kernel, diag_scan_fwd_kernel

__all__ = ["can_lower", "diag_scan", "diag_scan_bwd", "diag_scan_fwd"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# GPU configs; the autotune key is D only (never T: a new sequence length must not
# re-tune, and T varies per batch in training).
_CONFIGS = [
    triton.Config({"BLOCK_D": bd, "CHUNK_T": ct}, num_warps=w)
    for bd, ct, w in [(32, 64, 2), (64, 32, 2), (64, 64, 4), (128, 32, 4), (128, 16, 4)]
]
_fwd_tuned = triton.autotune(configs=_CONFIGS, key=["D"])(diag_scan_fwd_kernel)
_bwd_tuned = triton.autotune(configs=_CONFIGS, key=["D"])(diag_scan_bwd_kernel)


def can_lower(
    device: torch.device | str, dtype: torch.dtype, shape: tuple[int, ...]
) -> tuple[bool, str]:
    """Whether the Triton kernel handles inputs on ``device`` of ``dtype`` and (B, T, *F) ``shape``.

    Returns (ok, reason); ``reason`` says why not (it is logged by the caller's fallback).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"device is {device.type}, the kernel needs CUDA"
    if dtype not in _DTYPES:
        return False, f"dtype {dtype} not in float32/float16/bfloat16"
    if len(shape) < 2:
        return False, f"shape {shape} is not (B, T, *F)"
    if any(s == 0 for s in shape):
        return False, f"empty shape {shape}"
    D = 1  # B is grid axis 0 (limit 2**31 - 1); D / BLOCK_D is axis 1 (limit 65535)
    for s in shape[2:]:
        D *= s
    if triton.cdiv(D, 16) > 65535:
        return False, f"{D} features exceed the grid's axis-1 limit"
    return True, "ok"


def _interpreted(x: Tensor) -> bool:
    # Under TRITON_INTERPRET=1 tensors live on the CPU: use a fixed small config
    # (autotuning there would only multiply the interpreter's run time).
    return x.device.type == "cpu"


def _fixed_meta(D: int) -> dict[str, int]:
    return {"BLOCK_D": min(32, triton.next_power_of_2(D)), "CHUNK_T": 16}


def diag_scan_fwd(a: Tensor, b: Tensor, h0: Tensor | None, out: Tensor) -> Tensor:
    """Launch the forward kernel. a, b, out: contiguous (B, T, D); h0: (B, D) or None."""
    B, T, D = a.shape
    h0_arg = h0 if h0 is not None else out  # never read when HAS_H0 is False
    if _interpreted(a):
        meta = _fixed_meta(D)
        grid = (B, triton.cdiv(D, meta["BLOCK_D"]))
        diag_scan_fwd_kernel[grid](a, b, h0_arg, out, T, D, HAS_H0=h0 is not None, **meta)
    else:
        grid = lambda m: (B, triton.cdiv(D, m["BLOCK_D"]))  # noqa: E731
        _fwd_tuned[grid](a, b, h0_arg, out, T, D, HAS_H0=h0 is not None)
    return out


def diag_scan_bwd(
    a: Tensor,
    h: Tensor,
    h0: Tensor | None,
    gh: Tensor,
    ga: Tensor,
    gb: Tensor,
    gh0: Tensor | None,
) -> None:
    """Launch the backward kernel, writing ga, gb (B, T, D) and gh0 (B, D) when h0 is given."""
    B, T, D = a.shape
    h0_arg = h0 if h0 is not None else h
    gh0_arg = gh0 if gh0 is not None else ga
    args = (a, h, h0_arg, gh, ga, gb, gh0_arg, T, D)
    if _interpreted(a):
        meta = _fixed_meta(D)
        grid = (B, triton.cdiv(D, meta["BLOCK_D"]))
        diag_scan_bwd_kernel[grid](*args, HAS_H0=h0 is not None, **meta)
    else:
        grid = lambda m: (B, triton.cdiv(D, m["BLOCK_D"]))  # noqa: E731
        _bwd_tuned[grid](*args, HAS_H0=h0 is not None)


# A torch.library custom op (fake impl + registered autograd), so torch.compile traces
# around the kernel instead of breaking the graph. h is saved when it is float32; for half
# inputs backward recomputes it in float32 from b (nothing larger than the inputs is kept).


@torch.library.custom_op("archc::diag_scan", mutates_args=())
def _diag_scan_op(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """h = scan(a, b, h0) on contiguous (B, T, D), in b's dtype."""
    return diag_scan_fwd(a, b, h0, torch.empty_like(b))


@_diag_scan_op.register_fake
def _(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    return torch.empty_like(b)


@torch.library.custom_op("archc::diag_scan_bwd", mutates_args=())
def _diag_scan_bwd_op(
    a: Tensor, saved: Tensor, h0: Tensor | None, gh: Tensor, recompute: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (ga, gb, gh0); ``saved`` is h (float32) or b (``recompute``); gh0 is empty
    without h0 (a custom op returns tensors, never None)."""
    if recompute:
        h = torch.empty(saved.shape, dtype=torch.float32, device=saved.device)
        diag_scan_fwd(a, saved, h0, h)
    else:
        h = saved
    ga, gb = torch.empty_like(a), torch.empty_like(saved)
    gh0 = torch.empty_like(h0) if h0 is not None else a.new_empty(0)
    diag_scan_bwd(a, h, h0, gh, ga, gb, gh0 if h0 is not None else None)
    return ga, gb, gh0


@_diag_scan_bwd_op.register_fake
def _(a, saved, h0, gh, recompute):  # type: ignore[no-untyped-def]
    gh0 = torch.empty_like(h0) if h0 is not None else a.new_empty(0)
    return torch.empty_like(a), torch.empty_like(saved), gh0


def _diag_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    a, b, h0 = inputs
    ctx.has_h0 = h0 is not None
    ctx.recompute = output.dtype != torch.float32
    saved = b if ctx.recompute else output
    ctx.save_for_backward(a, saved, h0 if h0 is not None else a.new_empty(0))


def _diag_backward(ctx, gh):  # type: ignore[no-untyped-def]
    a, saved, h0 = ctx.saved_tensors
    h0 = h0 if ctx.has_h0 else None
    ga, gb, gh0 = torch.ops.archc.diag_scan_bwd(a, saved, h0, gh.contiguous(), ctx.recompute)
    return ga, gb, gh0 if h0 is not None else None


_diag_scan_op.register_autograd(_diag_backward, setup_context=_diag_setup)


def diag_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 1 with the Triton kernels (differentiable).

    a, b: (B, T, *F), same shape; h0: (B, *F) or None (zeros). Returns (B, T, *F) in
    b's dtype; a, b and h0 may each be float32/float16/bfloat16 (each is read in its own
    dtype and converted in registers); accumulation is in float32.
    """
    if a.shape != b.shape:
        raise ValueError(f"diag_scan: a {tuple(a.shape)} and b {tuple(b.shape)} differ")
    B, T = a.shape[:2]
    feat = a.shape[2:]
    a3 = a.reshape(B, T, -1).contiguous()
    b3 = b.reshape(B, T, -1).contiguous()
    h03 = h0.reshape(B, -1).contiguous() if h0 is not None else None
    h = torch.ops.archc.diag_scan(a3, b3, h03)
    return h.reshape(B, T, *feat)
