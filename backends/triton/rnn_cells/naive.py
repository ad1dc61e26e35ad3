"""Pure-torch references of the fused RNN cells: exactly the kernels' computation.

The input projection xproj = x W_ih^T + b_ih is done by the caller; these walk time
step by step (a Python loop: a reference, never handed to torch.compile). Gate order and
biases follow nn.LSTM (i, f, g, o) and nn.GRU (r, z, n, with b_hn inside r * (W_hn h + b_hn));
the leaky RNN follows archc's LeakyRNN (backends/torch/modules/cells.py).
Differentiable by autograd; compute in the inputs' dtype (pass float64 for an oracle).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gru_sequence_naive", "leaky_sequence_naive", "lstm_sequence_naive"]


def lstm_sequence_naive(
    xproj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """LSTM over time. xproj: (B, T, 4H) = x W_ih^T + b_ih + b_hh; w_hh: (4H, H);
    h0, c0: (B, H). Returns y (B, T, H) and the final (h_T, c_T), each (B, H)."""
    h, c = h0, c0
    ys = []
    for t in range(xproj.shape[1]):
        gates = xproj[:, t] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, dim=1), (h, c)


def gru_sequence_naive(
    xproj: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor
) -> tuple[Tensor, Tensor]:
    """GRU over time. xproj: (B, T, 3H) = x W_ih^T + b_ih; w_hh: (3H, H); b_hh: (3H,);
    h0: (B, H). Returns y (B, T, H) and h_T (B, H)."""
    h = h0
    ys = []
    for t in range(xproj.shape[1]):
        xr, xz, xn = xproj[:, t].chunk(3, dim=-1)
        hr, hz, hn = (h @ w_hh.t() + b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys, dim=1), h


def leaky_sequence_naive(
    u: Tensor, w_hh: Tensor, alpha: Tensor, h0: Tensor, nonlinearity: str = "tanh"
) -> tuple[Tensor, Tensor]:
    """Leaky (tau) RNN over time: h_t = h_{t-1} + alpha * (act(u_t + W_hh h_{t-1}) - h_{t-1}).

    u: (B, T, H) = x W_ih^T + b; w_hh: (H, H); alpha: (H,) = 1 / tau; h0: (B, H);
    nonlinearity "tanh" or "relu". Returns y (B, T, H) and h_T (B, H)."""
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = h0
    ys = []
    for t in range(u.shape[1]):
        h = h + alpha * (act(u[:, t] + h @ w_hh.t()) - h)
        ys.append(h)
    return torch.stack(ys, dim=1), h
