"""The torch.library custom ops shared by the matrix-state scans (gla_scan, delta_scan).

Both kernels take q, k (B, H, T, dk), v (B, H, T, dv), a per-step gate w (GLA: log
decays (B, H, T, dk); delta rule: beta (B, H, T)) and an optional S0 (B, H, dk, dv), and
return (o in v's dtype, S_T float32); their backward returns the four input gradients
and dS0 (float32). `register_matrix_scan` wraps a kernel pair's launchers as
``torch.ops.archc.<name>_fwd`` / ``<name>_bwd`` with fake impls (so torch.compile traces
around them, DESIGN §8) and registers the autograd: the forward saves only its inputs
and the backward kernel recomputes the chunk states in fp32. `can_lower` / `use_kernel`
are the two packages' shared lowering rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
from torch import Tensor

from archc.backends.triton.fallback import log_fallback

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Both kernels hold the whole key dimension in one register tile, next to (BT, BT)
# tiles (GLA's intra-chunk scores, the delta rule's triangular inverse): beyond 128 key
# dims that spills far too much.
MAX_DK = 128

# launch(q, k, v, w, S0, o, S_T) and launch(q, k, v, w, S0, do, dS_T, dq, dk, dv, dw, dS0):
# write into the given buffers.
Launch = Callable[..., None]


def register_matrix_scan(
    name: str, fwd: Launch, bwd: Launch
) -> Callable[..., tuple[Tensor, Tensor]]:
    """Register ``archc::{name}_fwd`` / ``archc::{name}_bwd``; returns the forward op."""

    def state_like(q: Tensor, v: Tensor) -> Tensor:
        B, H, _, dk = q.shape
        return v.new_empty(B, H, dk, v.shape[-1], dtype=torch.float32)

    @torch.library.custom_op(f"archc::{name}_fwd", mutates_args=())
    def fwd_op(
        q: Tensor, k: Tensor, v: Tensor, w: Tensor, S0: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        o, S_T = torch.empty_like(v), state_like(q, v)
        fwd(q, k, v, w, S0, o, S_T)
        return o, S_T

    @fwd_op.register_fake
    def _(q: Tensor, k: Tensor, v: Tensor, w: Tensor, S0: Tensor | None) -> tuple[Tensor, Tensor]:
        return torch.empty_like(v), state_like(q, v)

    @torch.library.custom_op(f"archc::{name}_bwd", mutates_args=())
    def bwd_op(
        q: Tensor, k: Tensor, v: Tensor, w: Tensor, S0: Tensor | None, do: Tensor, dS_T: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        grads = [torch.empty_like(x) for x in (q, k, v, w)]
        dS0 = state_like(q, v)  # written also without S0 (then unused)
        bwd(q, k, v, w, S0, do.contiguous(), dS_T.contiguous(), *grads, dS0)
        return (*grads, dS0)

    @bwd_op.register_fake
    def _(q, k, v, w, S0, do, dS_T):  # type: ignore[no-untyped-def]
        return (*(torch.empty_like(x) for x in (q, k, v, w)), state_like(q, v))

    def setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.save_for_backward(*inputs)  # only the inputs: the backward recomputes states

    def backward(ctx, go, gS):  # type: ignore[no-untyped-def]
        q, k, v, w, S0 = ctx.saved_tensors
        go = torch.zeros_like(v) if go is None else go
        gS = state_like(q, v).zero_() if gS is None else gS
        *grads, dS0 = bwd_op(q, k, v, w, S0, go, gS)
        return (*grads, dS0.to(S0.dtype) if S0 is not None else None)

    fwd_op.register_autograd(backward, setup_context=setup)
    return fwd_op


def can_lower(
    device: torch.device | str, dtype: torch.dtype, shape: tuple[int, ...]
) -> tuple[bool, str]:
    """Whether the matrix-scan kernels handle inputs on ``device`` of ``dtype`` and shape
    (B, H, T, dk, dv). Returns (ok, reason); ``reason`` says why not."""
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
    if dk > MAX_DK:
        return False, f"dk={dk} > {MAX_DK}: the key dimension is held in one register tile"
    if triton.cdiv(dv, 16) > 65535:  # grid axis 0 is the value blocks
        return False, f"dv={dv} exceeds the grid limit"
    if B * H > 65535:  # grid axis 1
        return False, f"B*H={B * H} exceeds the grid's axis-1 limit of 65535"
    return True, "ok"


def use_kernel(
    kernel: str, device: torch.device | str, dtypes: list[torch.dtype], shape: tuple[int, ...]
) -> bool:
    """can_lower for every input dtype; a refusal is logged once (as `kernel`) with its reason."""
    for dt in dtypes:
        ok, reason = can_lower(device, dt, shape)
        if not ok:
            log_fallback(kernel, reason)
            return False
    return True
