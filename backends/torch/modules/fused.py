"""nn.LSTM / nn.GRU (and the leaky RNN) running archc's fused Triton kernels on CUDA.

`FusedLSTM` and `FusedGRU` subclass nn.LSTM / nn.GRU with the same constructor and
parameter names, so state_dicts are unchanged. Their forward goes to the persistent
kernels of backends/triton/rnn_cells when the input is a CUDA tensor, the module is
unidirectional without projection (layers run one after the other, each fused) and the
kernel's ``can_lower`` accepts; otherwise, and always on CPU, it is exactly the torch
forward. A refusal on CUDA is logged once with its reason (archc's ``log_fallback``).
`fused_leaky_rnn` does the same for cells.py's LeakyRNN.

The standalone emitter copies these definitions verbatim into model.py, which must
import torch alone (tests/cli/test_emit.py), so nothing copied names archc: the kernels
come through `KernelHook.load`, which archc sets at the bottom of this file (not copied)
and which stays None in a standalone model.py, where the torch path runs, exact. The
loader imports the Triton side lazily, on the first CUDA call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KernelHook:
    """Where archc plugs in its fused RNN kernels: ``load()`` -> (rnn_cells op module or
    None, log_fallback, why the op is missing). None in a standalone model.py."""

    load = None


def fused_rnn(module: nn.Module, x: torch.Tensor, hx: object) -> object | None:
    """Run the nn.LSTM / nn.GRU `module` on `x` with archc's fused kernels.

    x: (B, T, D) if batch_first else (T, B, D); hx as nn.LSTM / nn.GRU take it (per-layer
    states (L, B, H), or None). Returns what the module's forward returns, or None when
    the kernels do not apply (the caller then runs the torch forward).
    """
    packed = not isinstance(x, torch.Tensor)  # a PackedSequence (varlen batch)
    if not (x.data if packed else x).is_cuda:
        return None  # on CPU the torch forward is the normal path: nothing to log
    if KernelHook.load is None:
        return None  # standalone model.py: the torch forward
    kind = "lstm" if isinstance(module, nn.LSTM) else "gru"
    op, log_fallback, missing = KernelHook.load()
    reason = "packed (varlen) input" if packed else _fused_rnn_refusal(module, x)
    if reason is None and op is None:
        reason = missing
    if reason is None:
        ok, why = op.can_lower(x.device, x.dtype, module.hidden_size, kind)
        reason = None if ok else why
    if reason is not None:
        log_fallback(f"rnn_cells.{kind}", reason)
        return None
    return fused_rnn_layers(module, x, hx, op)


def fused_rnn_layers(module: nn.Module, x: torch.Tensor, hx: object, op: object) -> object:
    """The layer loop of `fused_rnn`, without its checks: each layer's input projection
    is one matmul over all T, then ``op`` (archc's rnn_cells op module) runs the time
    recurrence. Same inputs and outputs as the module's forward."""
    kind = "lstm" if isinstance(module, nn.LSTM) else "gru"
    seq = x if module.batch_first else x.transpose(0, 1)
    if kind == "lstm":
        h0, c0 = hx if hx is not None else (None, None)
    else:
        h0, c0 = hx, None
    hs, cs = [], []
    for layer in range(module.num_layers):
        w_ih = getattr(module, f"weight_ih_l{layer}")
        w_hh = getattr(module, f"weight_hh_l{layer}")
        b_ih = getattr(module, f"bias_ih_l{layer}") if module.bias else None
        b_hh = getattr(module, f"bias_hh_l{layer}") if module.bias else None
        h_l = None if h0 is None else h0[layer]
        if kind == "lstm":
            # Both biases fold into the input projection: one big matmul over all T.
            b = None if b_ih is None else b_ih + b_hh
            c_l = None if c0 is None else c0[layer]
            seq, (h, c) = op.lstm_sequence(F.linear(seq, w_ih, b), w_hh, h_l, c_l)
            cs.append(c)
        else:
            # b_hh stays apart: b_hn sits inside r * (W_hn h + b_hn).
            seq, h = op.gru_sequence(F.linear(seq, w_ih, b_ih), w_hh, b_hh, h_l)
        hs.append(h)
        if layer + 1 < module.num_layers and module.dropout and module.training:
            seq = F.dropout(seq, module.dropout, True)
    y = seq if module.batch_first else seq.transpose(0, 1)
    h_n = torch.stack(hs)
    return (y, (h_n, torch.stack(cs))) if kind == "lstm" else (y, h_n)


def _fused_rnn_refusal(module: nn.Module, x: torch.Tensor) -> str | None:
    """Why the fused kernels cannot run `module` on `x` (None if they can)."""
    if module.bidirectional:
        return "bidirectional (the kernel walks time forward only)"
    if getattr(module, "proj_size", 0):
        return f"proj_size={module.proj_size} (LSTM projections are not fused)"
    if x.dim() != 3:
        return f"input of {x.dim()} dims, not batched (B, T, D)"
    if 0 in x.shape:
        return f"empty input {tuple(x.shape)}"
    return None


class FusedLSTM(nn.LSTM):
    """nn.LSTM (same arguments and parameters) whose forward runs archc's fused Triton
    LSTM kernels on CUDA when they apply; otherwise, and on CPU, nn.LSTM's forward.

    x (B, T, D) with batch_first -> (y (B, T, H), (h_n, c_n) each (L, B, H)).
    """

    def forward(self, input, hx=None):  # type: ignore[no-untyped-def, override]
        out = fused_rnn(self, input, hx)
        return super().forward(input, hx) if out is None else out


class FusedGRU(nn.GRU):
    """nn.GRU (same arguments and parameters) whose forward runs archc's fused Triton
    GRU kernels on CUDA when they apply; otherwise, and on CPU, nn.GRU's forward.

    x (B, T, D) with batch_first -> (y (B, T, H), h_n (L, B, H)).
    """

    def forward(self, input, hx=None):  # type: ignore[no-untyped-def, override]
        out = fused_rnn(self, input, hx)
        return super().forward(input, hx) if out is None else out


def fused_leaky_rnn(
    module: nn.Module, x: torch.Tensor, h0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """cells.py's LeakyRNN `module` on x (B, T, D), h0 (B, H) or None, with archc's fused
    leaky kernel: (y (B, T, H), h_T (B, H)), or None when it does not apply (CPU, no
    archc / triton, or ``can_lower`` refused: logged once on CUDA)."""
    if not x.is_cuda or KernelHook.load is None:
        return None  # CPU, or a standalone model.py: the torch loop
    op, log_fallback, missing = KernelHook.load()
    if op is None:
        log_fallback("rnn_cells.leaky", missing)
        return None
    ok, why = op.can_lower(x.device, x.dtype, module.hidden, "leaky")
    if ok and (x.dim() != 3 or 0 in x.shape):
        ok, why = False, f"input {tuple(x.shape)} is not a non-empty (B, T, D)"
    if not ok:
        log_fallback("rnn_cells.leaky", why)
        return None
    u = F.linear(x, module.weight_ih, module.bias)  # the input part of every step at once
    alpha = 1.0 / module.tau()  # (H,); its gradient reaches tau_raw by autograd
    return op.leaky_sequence(u, module.weight_hh, alpha, h0, module.nonlinearity)


def _load_kernels() -> tuple[object | None, object, str]:
    """archc's side of `KernelHook`: the rnn_cells op module (imports triton; None when
    that fails), the fallback logger, and the import error as a reason."""
    from archc.backends.triton.fallback import log_fallback

    try:
        from archc.backends.triton.rnn_cells import op
    except ImportError as err:  # triton missing
        return None, log_fallback, f"triton unavailable: {err}"
    return op, log_fallback, ""


# Set here, at import, by archc (this line is not copied into a standalone model.py).
KernelHook.load = staticmethod(_load_kernels)
