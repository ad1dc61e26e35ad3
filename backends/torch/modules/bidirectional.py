"""Bidirectional wrapper for the recurrent cells of cells.py.

`Bidirectional(fwd, bwd)` runs `fwd` over each sequence as given and `bwd` over it
reversed, and concatenates their outputs like torch.nn.LSTM(bidirectional=True):
y (B, T, 2 * H_out) = [forward outputs, backward outputs], where the backward output
at step t is the backward cell's output after reading steps T-1..t of that sequence.
The final carries stack along a leading direction dim: (2, B, *carry), forward first.

Variable-length batches (`lengths` (B,), right-padded, each in 1..T) follow the cells'
convention: the backward cell reads each sequence reversed *within its length*
(steps length-1..0, padding left in place at the end), so it starts at the sequence's
real last step rather than at the padding; outputs past each length are zero and both
final carries are each sequence's own.

The standalone emitter copies this file's definitions into model.py, so they use
torch/nn only.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_within(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, ...) with each sequence's first lengths[b] steps reversed and its padding
    left in place; a plain flip along time without lengths. Its own inverse."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    n = lengths.to(x.device)[:, None]
    idx = torch.where(t < n, n - 1 - t, t)  # (B, T): a permutation of each row
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class Bidirectional(nn.Module):
    """Two cells with the cells.py interface, one per direction; parameters live under
    `fwd.` and `bwd.`."""

    def __init__(self, fwd: nn.Module, bwd: nn.Module) -> None:
        super().__init__()
        self.fwd, self.bwd = fwd, bwd

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (2, B, *carry) or None, lengths (B,) or None ->
        (y (B, T, 2 * H_out), final carries (2, B, *carry)). Extra keyword arguments
        (such as the diagonal GRU's `exact`) go to both cells."""
        h0f, h0b = (None, None) if h0 is None else (h0[0], h0[1])
        yf, hf = self.fwd(x, h0f, lengths=lengths, **kwargs)
        yb, hb = self.bwd(reverse_within(x, lengths), h0b, lengths=lengths, **kwargs)
        return torch.cat([yf, reverse_within(yb, lengths)], dim=-1), torch.stack([hf, hb])
