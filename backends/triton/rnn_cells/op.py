"""Autograd ops and lowering test of the fused sequential RNN cells (LSTM, GRU).

``lstm_sequence(xproj, w_hh, h0, c0)`` and ``gru_sequence(xproj, w_hh, b_hh, h0)`` run
the time recurrence with the Triton kernels of kernel.py, forward *and* backward (the
backward is a Triton kernel walking time in reverse; only dW_hh / db_hh are then one
parallel torch matmul / sum over (B, T)). The input projection x W_ih^T + b_ih is the
caller's (one big matmul, parallel over time), so gradients wrt x, W_ih, b_ih follow by
autograd through that matmul.

Maximum hidden size: ``MAX_HIDDEN`` = 64. A program keeps G tiles of W_hh (G = 4 for
LSTM, 3 for GRU) of (BLOCK_H, BLOCK_H) fp32 in registers for the whole sequence, plus the
transposed tiles in backward: at H = 64 that is 16K (fwd) / 32K (bwd) fp32 values per
program, i.e. 64 / 128 registers per thread at 8 warps. Beyond that the tiles spill to
local memory and the kernel loses its point; ``can_lower`` refuses and the caller uses
nn.LSTM / nn.GRU (cuDNN), which is the better kernel at large H anyway.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from archc.backends.triton.fallback import log_fallback
from archc.backends.triton.rnn_cells.kernel import (
    gru_bwd_kernel,
    gru_fwd_kernel,
    lstm_bwd_kernel,
    lstm_fwd_kernel,
)

__all__ = [
    "CELLS",
    "MAX_HIDDEN",
    "can_lower",
    "gru_sequence",
    "launch",
    "lstm_sequence",
    "use_kernel",
]

MAX_HIDDEN = 64
CELLS = ("lstm", "gru")
_GATES = {"lstm": 4, "gru": 3}
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
    ]
}
_RAW = {
    "lstm_fwd": lstm_fwd_kernel,
    "lstm_bwd": lstm_bwd_kernel,
    "gru_fwd": gru_fwd_kernel,
    "gru_bwd": gru_bwd_kernel,
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


def launch(name: str, B: int, T: int, H: int, *args: Tensor) -> None:
    """Launch kernel ``name`` ("lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd") with the
    kernel's tensor arguments ``args`` (see kernel.py; outputs are caller-provided, so
    tests can pre-fill them with NaN) over batch blocks: fixed BLOCK_B=16 under the interpreter
    (tensors on CPU; autotuning there would only multiply its run time), tuned on GPU."""
    bh = _block_h(H)
    if args[0].device.type == "cpu":
        _RAW[name][(triton.cdiv(B, 16),)](*args, B, T, H, BLOCK_B=16, BLOCK_H=bh)
    else:
        grid = lambda m: (triton.cdiv(B, m["BLOCK_B"]),)  # noqa: E731
        _TUNED[name][grid](*args, B, T, H, BLOCK_H=bh)


def _shifted(h0: Tensor, y: Tensor) -> Tensor:
    """h_{t-1} for every t: (B, T, H) = [h0, y_0, ..., y_{T-2}]."""
    return torch.cat([h0[:, None].to(y.dtype), y[:, :-1]], dim=1)


class _LSTMSeq(torch.autograd.Function):
    """(y, h_T, c_T) = LSTM(xproj, w_hh, h0, c0). Saves xproj, w_hh, h0, c0 and the fp32
    h and c sequences; backward recomputes the gates in fp32 from them."""

    @staticmethod
    def forward(ctx, xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor):  # type: ignore[override]
        B, T, G4 = xproj.shape
        H = G4 // 4
        y = torch.empty(B, T, H, device=xproj.device, dtype=torch.float32)
        cseq = torch.empty_like(y)
        hT = torch.empty(B, H, device=xproj.device, dtype=torch.float32)
        cT = torch.empty_like(hT)
        launch("lstm_fwd", B, T, H, xproj, w_hh, h0, c0, y, cseq, hT, cT)
        ctx.save_for_backward(xproj, w_hh, h0, c0, y, cseq)
        ctx.in_dtypes = (xproj.dtype, w_hh.dtype, h0.dtype, c0.dtype)
        dt = xproj.dtype
        return y.to(dt), hT.to(dt), cT.to(dt)

    @staticmethod
    def backward(ctx, dy: Tensor, dhT: Tensor, dcT: Tensor):  # type: ignore[override]
        xproj, w_hh, h0, c0, y, cseq = ctx.saved_tensors
        B, T, G4 = xproj.shape
        H = G4 // 4
        dxproj = torch.empty(B, T, G4, device=xproj.device, dtype=torch.float32)
        dh0 = torch.empty(B, H, device=xproj.device, dtype=torch.float32)
        dc0 = torch.empty_like(dh0)
        launch(
            "lstm_bwd",
            B,
            T,
            H,
            xproj,
            w_hh,
            h0,
            c0,
            y,
            cseq,
            dy.contiguous(),
            dhT.contiguous(),
            dcT.contiguous(),
            dxproj,
            dh0,
            dc0,
        )
        # dW_hh = sum_{b,t} dgates_{b,t}^T h_{b,t-1}: one parallel matmul, not in the loop.
        dw = dxproj.reshape(-1, G4).t() @ _shifted(h0, y).reshape(-1, H)
        xd, wd, hd, cd = ctx.in_dtypes
        return dxproj.to(xd), dw.to(wd), dh0.to(hd), dc0.to(cd)


class _GRUSeq(torch.autograd.Function):
    """(y, h_T) = GRU(xproj, w_hh, b_hh, h0). Saves the inputs and the fp32 h sequence."""

    @staticmethod
    def forward(ctx, xproj: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor):  # type: ignore[override]
        B, T, G3 = xproj.shape
        H = G3 // 3
        y = torch.empty(B, T, H, device=xproj.device, dtype=torch.float32)
        hT = torch.empty(B, H, device=xproj.device, dtype=torch.float32)
        launch("gru_fwd", B, T, H, xproj, w_hh, b_hh, h0, y, hT)
        ctx.save_for_backward(xproj, w_hh, b_hh, h0, y)
        ctx.in_dtypes = (xproj.dtype, w_hh.dtype, b_hh.dtype, h0.dtype)
        return y.to(xproj.dtype), hT.to(xproj.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor, dhT: Tensor):  # type: ignore[override]
        xproj, w_hh, b_hh, h0, y = ctx.saved_tensors
        B, T, G3 = xproj.shape
        H = G3 // 3
        dxproj = torch.empty(B, T, G3, device=xproj.device, dtype=torch.float32)
        dghh = torch.empty_like(dxproj)
        dh0 = torch.empty(B, H, device=xproj.device, dtype=torch.float32)
        launch(
            "gru_bwd",
            B,
            T,
            H,
            xproj,
            w_hh,
            b_hh,
            h0,
            y,
            dy.contiguous(),
            dhT.contiguous(),
            dxproj,
            dghh,
            dh0,
        )
        dghh2 = dghh.reshape(-1, G3)
        dw = dghh2.t() @ _shifted(h0, y).reshape(-1, H)
        db = dghh2.sum(0)
        xd, wd, bd, hd = ctx.in_dtypes
        return dxproj.to(xd), dw.to(wd), db.to(bd), dh0.to(hd)


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
    y, hT, cT = _LSTMSeq.apply(xproj.contiguous(), w_hh.contiguous(), h0, c0)
    return y, (hT, cT)


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
    y, hT = _GRUSeq.apply(xproj.contiguous(), w_hh.contiguous(), b_hh.contiguous(), h0)
    return y, hT
