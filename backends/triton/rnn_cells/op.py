"""Autograd ops and lowering test of the fused sequential RNN cells (LSTM, GRU, leaky).

``lstm_sequence(xproj, w_hh, h0, c0)``, ``gru_sequence(xproj, w_hh, b_hh, h0)`` and
``leaky_sequence(u, w_hh, alpha, h0, nonlinearity)`` run the time recurrence with the
Triton kernels of kernel.py, forward *and* backward (the backward is a Triton kernel
walking time in reverse; only dW_hh / db_hh are then one parallel torch matmul / sum over
(B, T)). The input projection x W_ih^T + b_ih is the caller's (one big matmul, parallel
over time), so gradients wrt x, W_ih, b_ih (and tau_raw through alpha = 1 / tau) follow
by autograd outside.

The kernels are torch.library custom ops (``torch.ops.archc.lstm_fwd`` etc., with fake
impls and registered autograd), so torch.compile traces around them.

Maximum hidden size: ``MAX_HIDDEN`` = 64. A program keeps G tiles of W_hh (G = 4 for
LSTM, 3 for GRU, 1 for the leaky RNN) of (BLOCK_H, BLOCK_H) fp32 in registers for the
whole sequence, plus the transposed tiles in backward: at H = 64 that is 16K (fwd) / 32K
(bwd) fp32 values per program, i.e. 64 / 128 registers per thread at 8 warps. Beyond that
the tiles spill to local memory and the kernel loses its point; ``can_lower`` refuses and
the caller uses nn.LSTM / nn.GRU (cuDNN), which is the better kernel at large H anyway.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton.fallback import log_fallback
from archc.backends.triton.rnn_cells import MAX_HIDDEN
from archc.backends.triton.rnn_cells.kernel import (
    gru_bwd_kernel,
    gru_fwd_kernel,
    leaky_bwd_kernel,
    leaky_fwd_kernel,
    lstm_bwd_kernel,
    lstm_fwd_kernel,
)

__all__ = [
    "CELLS",
    "MAX_HIDDEN",
    "can_lower",
    "gru_sequence",
    "launch",
    "leaky_sequence",
    "lstm_sequence",
    "use_kernel",
]

CELLS = ("lstm", "gru", "leaky")
_GATES = {"lstm": 4, "gru": 3, "leaky": 1}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# GPU configs. The autotune key is H only: never T (a new sequence length must not
# re-tune) and not B (varies per batch). Every launch rewrites all its outputs, so the
# autotuner's repeated launches are harmless.
_CONFIGS = [
    triton.Config({"BLOCK_B": bb}, num_warps=w) for bb, w in [(16, 4), (16, 8), (32, 4), (32, 8)]
]
_TUNED = {
    k: triton.autotune(configs=_CONFIGS, key=["H"])(fn)
    for k, fn in [
        ("lstm_fwd", lstm_fwd_kernel),
        ("lstm_bwd", lstm_bwd_kernel),
        ("gru_fwd", gru_fwd_kernel),
        ("gru_bwd", gru_bwd_kernel),
        ("leaky_fwd", leaky_fwd_kernel),
        ("leaky_bwd", leaky_bwd_kernel),
    ]
}
_RAW = {
    "lstm_fwd": lstm_fwd_kernel,
    "lstm_bwd": lstm_bwd_kernel,
    "gru_fwd": gru_fwd_kernel,
    "gru_bwd": gru_bwd_kernel,
    "leaky_fwd": leaky_fwd_kernel,
    "leaky_bwd": leaky_bwd_kernel,
}


def can_lower(
    device: torch.device | str, dtype: torch.dtype, hidden: int, cell: str = "lstm"
) -> tuple[bool, str]:
    """Whether the fused ``cell`` kernel handles ``hidden`` units of ``dtype`` on ``device``.

    Returns (ok, reason); ``reason`` says why not (logged by the caller's fallback, which
    should then use nn.LSTM / nn.GRU).
    """
    device = torch.device(device)
    if cell not in _GATES:
        return False, f"cell {cell!r} has no fused kernel (have {', '.join(CELLS)})"
    if device.type != "cuda":
        return False, f"device is {device.type}, the kernel needs CUDA"
    if dtype not in _DTYPES:
        return False, f"dtype {dtype} not in float32/float16/bfloat16"
    if hidden < 1:
        return False, f"hidden size {hidden} < 1"
    if hidden > MAX_HIDDEN:
        return False, (
            f"hidden size {hidden} > {MAX_HIDDEN}: W_hh would not stay in registers "
            f"across time steps (use nn.{cell.upper()})"
        )
    return True, "ok"


def use_kernel(device: torch.device | str, dtype: torch.dtype, hidden: int, cell: str) -> bool:
    """``can_lower``, logging the reason (once) when the caller must fall back to torch."""
    ok, reason = can_lower(device, dtype, hidden, cell)
    if not ok:
        log_fallback(f"rnn_cells.{cell}", reason)
    return ok


def _block_h(H: int) -> int:
    return max(16, triton.next_power_of_2(H))  # tl.dot needs every dimension >= 16


def launch(name: str, B: int, T: int, H: int, *args: Tensor, **meta: bool) -> None:
    """Launch kernel ``name`` ("lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd", "leaky_fwd",
    "leaky_bwd") with the kernel's tensor arguments ``args`` (see kernel.py; outputs are
    caller-provided, so tests can pre-fill them with NaN) and constexpr flags ``meta``
    (RELU for the leaky RNN) over batch blocks: fixed BLOCK_B=16 under the interpreter
    (tensors on CPU; autotuning there would only multiply its run time), tuned on GPU."""
    bh = _block_h(H)
    if args[0].device.type == "cpu":
        _RAW[name][(triton.cdiv(B, 16),)](*args, B, T, H, **meta, BLOCK_B=16, BLOCK_H=bh)
    else:
        grid = lambda m: (triton.cdiv(B, m["BLOCK_B"]),)  # noqa: E731
        _TUNED[name][grid](*args, B, T, H, **meta, BLOCK_H=bh)


def _shifted(h0: Tensor, y: Tensor) -> Tensor:
    """h_{t-1} for every t: (B, T, H) = [h0, y_0, ..., y_{T-2}]."""
    return torch.cat([h0[:, None].to(y.dtype), y[:, :-1]], dim=1)


def _f32(*shape: int, like: Tensor) -> Tensor:
    return torch.empty(*shape, device=like.device, dtype=torch.float32)


def _grad(g: Tensor | None, like: Tensor) -> Tensor:
    """An output's incoming gradient; None (output unused) means zeros."""
    return torch.zeros_like(like) if g is None else g.contiguous()


# The ops are torch.library custom ops (fake impls give shapes; autograd registered), so
# torch.compile traces around the kernels instead of breaking the graph. Forward ops
# return fp32 tensors only (casting to the input dtype happens outside, in traced torch
# code): a custom op's outputs must not alias each other, which `.to(same dtype)` would.

# ----------------------------------------------------------------------------- LSTM


@torch.library.custom_op("archc::lstm_fwd", mutates_args=())
def _lstm_fwd(
    xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (y, h_T, c_T, c sequence), fp32; y and the c sequence are saved for backward."""
    B, T, G4 = xproj.shape
    H = G4 // 4
    y, cseq = _f32(B, T, H, like=xproj), _f32(B, T, H, like=xproj)
    hT, cT = _f32(B, H, like=xproj), _f32(B, H, like=xproj)
    launch("lstm_fwd", B, T, H, xproj, w_hh, h0, c0, y, cseq, hT, cT)
    return y, hT, cT, cseq


@_lstm_fwd.register_fake
def _(xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor):
    B, T, G4 = xproj.shape
    seq = xproj.new_empty(B, T, G4 // 4, dtype=torch.float32)
    st = xproj.new_empty(B, G4 // 4, dtype=torch.float32)
    return seq, st, torch.empty_like(st), torch.empty_like(seq)


@torch.library.custom_op("archc::lstm_bwd", mutates_args=())
def _lstm_bwd(
    xproj: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    y: Tensor,
    cseq: Tensor,
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (dxproj, dw_hh, dh0, dc0), fp32."""
    B, T, G4 = xproj.shape
    H = G4 // 4
    dxproj = _f32(B, T, G4, like=xproj)
    dh0, dc0 = _f32(B, H, like=xproj), _f32(B, H, like=xproj)
    args = (xproj, w_hh, h0, c0, y, cseq, dy, dhT, dcT, dxproj, dh0, dc0)
    launch("lstm_bwd", B, T, H, *args)
    # dW_hh = sum_{b,t} dgates_{b,t}^T h_{b,t-1}: one parallel matmul, not in the loop.
    dw = dxproj.reshape(-1, G4).t() @ _shifted(h0, y).reshape(-1, H)
    return dxproj, dw, dh0, dc0


@_lstm_bwd.register_fake
def _(xproj, w_hh, h0, c0, y, cseq, dy, dhT, dcT):  # type: ignore[no-untyped-def]
    f = torch.float32
    return (
        torch.empty_like(xproj, dtype=f),
        torch.empty_like(w_hh, dtype=f),
        torch.empty_like(h0, dtype=f),
        torch.empty_like(c0, dtype=f),
    )


def _lstm_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    xproj, w_hh, h0, c0 = inputs
    y, _, _, cseq = output
    ctx.save_for_backward(xproj, w_hh, h0, c0, y, cseq)


def _lstm_backward(ctx, dy, dhT, dcT, _dcseq):  # type: ignore[no-untyped-def]
    xproj, w_hh, h0, c0, y, cseq = ctx.saved_tensors
    dys = (_grad(dy, y), _grad(dhT, h0), _grad(dcT, c0))
    g = torch.ops.archc.lstm_bwd(xproj, w_hh, h0, c0, y, cseq, *dys)
    return tuple(d.to(t.dtype) for d, t in zip(g, (xproj, w_hh, h0, c0), strict=True))


_lstm_fwd.register_autograd(_lstm_backward, setup_context=_lstm_setup)


# ----------------------------------------------------------------------------- GRU


@torch.library.custom_op("archc::gru_fwd", mutates_args=())
def _gru_fwd(xproj: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """-> (y, h_T), fp32; y is saved for backward."""
    B, T, G3 = xproj.shape
    H = G3 // 3
    y, hT = _f32(B, T, H, like=xproj), _f32(B, H, like=xproj)
    launch("gru_fwd", B, T, H, xproj, w_hh, b_hh, h0, y, hT)
    return y, hT


@_gru_fwd.register_fake
def _(xproj: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor):
    B, T, G3 = xproj.shape
    f = torch.float32
    return xproj.new_empty(B, T, G3 // 3, dtype=f), xproj.new_empty(B, G3 // 3, dtype=f)


@torch.library.custom_op("archc::gru_bwd", mutates_args=())
def _gru_bwd(
    xproj: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor, y: Tensor, dy: Tensor, dhT: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (dxproj, dw_hh, db_hh, dh0), fp32."""
    B, T, G3 = xproj.shape
    H = G3 // 3
    dxproj, dghh = _f32(B, T, G3, like=xproj), _f32(B, T, G3, like=xproj)
    dh0 = _f32(B, H, like=xproj)
    launch("gru_bwd", B, T, H, xproj, w_hh, b_hh, h0, y, dy, dhT, dxproj, dghh, dh0)
    dghh2 = dghh.reshape(-1, G3)
    dw = dghh2.t() @ _shifted(h0, y).reshape(-1, H)
    return dxproj, dw, dghh2.sum(0), dh0


@_gru_bwd.register_fake
def _(xproj, w_hh, b_hh, h0, y, dy, dhT):  # type: ignore[no-untyped-def]
    f = torch.float32
    return (
        torch.empty_like(xproj, dtype=f),
        torch.empty_like(w_hh, dtype=f),
        torch.empty_like(b_hh, dtype=f),
        torch.empty_like(h0, dtype=f),
    )


def _gru_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(*inputs, output[0])


def _gru_backward(ctx, dy, dhT):  # type: ignore[no-untyped-def]
    xproj, w_hh, b_hh, h0, y = ctx.saved_tensors
    g = torch.ops.archc.gru_bwd(xproj, w_hh, b_hh, h0, y, _grad(dy, y), _grad(dhT, h0))
    return tuple(d.to(t.dtype) for d, t in zip(g, (xproj, w_hh, b_hh, h0), strict=True))


_gru_fwd.register_autograd(_gru_backward, setup_context=_gru_setup)


# ----------------------------------------------------------------------------- leaky RNN


@torch.library.custom_op("archc::leaky_fwd", mutates_args=())
def _leaky_fwd(
    u: Tensor, w_hh: Tensor, alpha: Tensor, h0: Tensor, relu: bool
) -> tuple[Tensor, Tensor]:
    """-> (y, h_T), fp32; y is saved for backward."""
    B, T, H = u.shape
    y, hT = _f32(B, T, H, like=u), _f32(B, H, like=u)
    launch("leaky_fwd", B, T, H, u, w_hh, alpha, h0, y, hT, RELU=relu)
    return y, hT


@_leaky_fwd.register_fake
def _(u: Tensor, w_hh: Tensor, alpha: Tensor, h0: Tensor, relu: bool):
    return torch.empty_like(u, dtype=torch.float32), torch.empty_like(h0, dtype=torch.float32)


@torch.library.custom_op("archc::leaky_bwd", mutates_args=())
def _leaky_bwd(
    u: Tensor,
    w_hh: Tensor,
    alpha: Tensor,
    h0: Tensor,
    y: Tensor,
    dy: Tensor,
    dhT: Tensor,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (du, dw_hh, dalpha, dh0), fp32."""
    B, T, H = u.shape
    du, dalpha, dh0 = _f32(B, T, H, like=u), _f32(B, H, like=u), _f32(B, H, like=u)
    launch("leaky_bwd", B, T, H, u, w_hh, alpha, h0, y, dy, dhT, du, dalpha, dh0, RELU=relu)
    # d(u + h W^T)/dW: one parallel matmul over (B, T); dalpha is summed per row in-kernel.
    dw = du.reshape(-1, H).t() @ _shifted(h0, y).reshape(-1, H)
    return du, dw, dalpha.sum(0), dh0


@_leaky_bwd.register_fake
def _(u, w_hh, alpha, h0, y, dy, dhT, relu):  # type: ignore[no-untyped-def]
    f = torch.float32
    return (
        torch.empty_like(u, dtype=f),
        torch.empty_like(w_hh, dtype=f),
        torch.empty_like(alpha, dtype=f),
        torch.empty_like(h0, dtype=f),
    )


def _leaky_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    u, w_hh, alpha, h0, relu = inputs
    ctx.relu = relu
    ctx.save_for_backward(u, w_hh, alpha, h0, output[0])


def _leaky_backward(ctx, dy, dhT):  # type: ignore[no-untyped-def]
    u, w_hh, alpha, h0, y = ctx.saved_tensors
    g = torch.ops.archc.leaky_bwd(u, w_hh, alpha, h0, y, _grad(dy, y), _grad(dhT, h0), ctx.relu)
    grads = tuple(d.to(t.dtype) for d, t in zip(g, (u, w_hh, alpha, h0), strict=True))
    return (*grads, None)


_leaky_fwd.register_autograd(_leaky_backward, setup_context=_leaky_setup)


def _check(xproj: Tensor, w_hh: Tensor, gates: int, name: str) -> tuple[int, int, int]:
    if xproj.dim() != 3 or xproj.shape[2] % gates:
        raise ValueError(f"{name}: xproj {tuple(xproj.shape)} is not (B, T, {gates}*H)")
    B, T, GH = xproj.shape
    H = GH // gates
    if tuple(w_hh.shape) != (GH, H):
        raise ValueError(f"{name}: w_hh {tuple(w_hh.shape)} is not ({GH}, {H})")
    if T == 0 or B == 0:
        raise ValueError(f"{name}: empty input {tuple(xproj.shape)}")
    return B, T, H


def _state(s: Tensor | None, B: int, H: int, like: Tensor, name: str) -> Tensor:
    if s is None:
        return torch.zeros(B, H, device=like.device, dtype=torch.float32)
    if tuple(s.shape) != (B, H):
        raise ValueError(f"{name} {tuple(s.shape)} is not ({B}, {H})")
    return s.contiguous()


def lstm_sequence(
    xproj: Tensor, w_hh: Tensor, h0: Tensor | None = None, c0: Tensor | None = None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """LSTM time recurrence with the fused Triton kernels (differentiable).

    xproj: (B, T, 4H) = x W_ih^T + b_ih + b_hh, gate blocks (i, f, g, o) as nn.LSTM;
    w_hh: (4H, H); h0, c0: (B, H) or None (zeros). Returns y (B, T, H) and (h_T, c_T),
    each (B, H), in xproj's dtype; all arithmetic is fp32. The caller checks
    ``can_lower`` first (H <= MAX_HIDDEN; CUDA, or CPU under TRITON_INTERPRET=1).
    """
    B, _, H = _check(xproj, w_hh, 4, "lstm_sequence")
    h0 = _state(h0, B, H, xproj, "h0")
    c0 = _state(c0, B, H, xproj, "c0")
    y, hT, cT, _ = torch.ops.archc.lstm_fwd(xproj.contiguous(), w_hh.contiguous(), h0, c0)
    dt = xproj.dtype
    return y.to(dt), (hT.to(dt), cT.to(dt))


def gru_sequence(
    xproj: Tensor, w_hh: Tensor, b_hh: Tensor | None = None, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """GRU time recurrence with the fused Triton kernels (differentiable).

    xproj: (B, T, 3H) = x W_ih^T + b_ih, gate blocks (r, z, n) as nn.GRU; w_hh: (3H, H);
    b_hh: (3H,) or None (zeros), kept separate because b_hn sits inside
    r * (W_hn h + b_hn); h0: (B, H) or None. Returns y (B, T, H) and h_T (B, H).
    """
    B, _, H = _check(xproj, w_hh, 3, "gru_sequence")
    h0 = _state(h0, B, H, xproj, "h0")
    if b_hh is None:
        b_hh = torch.zeros(3 * H, device=xproj.device, dtype=torch.float32)
    elif tuple(b_hh.shape) != (3 * H,):
        raise ValueError(f"gru_sequence: b_hh {tuple(b_hh.shape)} is not ({3 * H},)")
    y, hT = torch.ops.archc.gru_fwd(xproj.contiguous(), w_hh.contiguous(), b_hh.contiguous(), h0)
    return y.to(xproj.dtype), hT.to(xproj.dtype)


def leaky_sequence(
    u: Tensor,
    w_hh: Tensor,
    alpha: Tensor,
    h0: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """Leaky (tau) RNN recurrence with the fused Triton kernels (differentiable).

    h_t = h_{t-1} + alpha * (act(u_t + W_hh h_{t-1}) - h_{t-1}), act tanh or relu, as
    archc's LeakyRNN. u: (B, T, H) = x W_ih^T + b; w_hh: (H, H); alpha: (H,) = 1 / tau
    (its gradient flows on to tau_raw by autograd); h0: (B, H) or None (zeros).
    Returns y (B, T, H) and h_T (B, H) in u's dtype; all arithmetic is fp32.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"leaky_sequence: nonlinearity {nonlinearity!r} is not tanh or relu")
    B, _, H = _check(u, w_hh, 1, "leaky_sequence")
    if tuple(alpha.shape) != (H,):
        raise ValueError(f"leaky_sequence: alpha {tuple(alpha.shape)} is not ({H},)")
    h0 = _state(h0, B, H, u, "h0")
    relu = nonlinearity == "relu"
    y, hT = torch.ops.archc.leaky_fwd(
        u.contiguous(), w_hh.contiguous(), alpha.contiguous(), h0, relu
    )
    return y.to(u.dtype), hT.to(u.dtype)
