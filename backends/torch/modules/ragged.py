"""Ragged sequences: the selected positions of a (B, T, D) batch, of a different count
per row (dynamic chunking, byte -> word splits).

Two representations:
- ragged: `values` (N, D), the selected rows of every batch row back to back in time
  order, and `offsets` (B + 1,) with row b's values at values[offsets[b]:offsets[b+1]];
- padded: (B, L, D) with row b's values first, zeros after `lengths[b]`, L = max
  length; what an inner network (attention, scans honouring `lengths`) runs on.
"""

from __future__ import annotations

import torch


def pack(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, D), mask (B, T) bool -> (values (N, D), offsets (B + 1,) int64)."""
    counts = mask.sum(1)
    offsets = torch.zeros(mask.shape[0] + 1, dtype=torch.long, device=x.device)
    offsets[1:] = counts.cumsum(0)
    return x[mask], offsets  # boolean indexing is row-major: rows in order, time in order


def unpack(values: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack`: (B, T, D) with values at the masked positions, 0 elsewhere."""
    assert int(offsets[-1]) == int(mask.sum()), "offsets do not match the mask"
    out = values.new_zeros((*mask.shape, values.shape[-1]))
    out[mask] = values
    return out


def ragged_to_padded(
    values: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (N, D), offsets (B + 1,)) -> (padded (B, L, D), lengths (B,))."""
    lengths = offsets[1:] - offsets[:-1]
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    keep = torch.arange(width, device=values.device) < lengths[:, None]  # (B, L)
    out = values.new_zeros((lengths.shape[0], width, values.shape[-1]))
    out[keep] = values
    return out, lengths


def padded_to_ragged(
    padded: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded (B, L, D), lengths (B,)) -> (values (N, D), offsets (B + 1,))."""
    keep = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]
    return pack(padded, keep)


def select_padded(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked positions of x (B, T, D) as a padded batch: (B, L, D) and lengths (B,).

    Equals ragged_to_padded(*pack(x, mask)) but by one gather (differentiable in x).
    """
    lengths = mask.sum(1)
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    # A stable sort of "not selected" puts each row's selected positions first, in order.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    out = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    keep = torch.arange(width, device=x.device) < lengths[:, None]
    return out * keep.unsqueeze(-1).to(out.dtype), lengths


def chunk_of(starts: torch.Tensor) -> torch.Tensor:
    """starts (B, T) bool, True where a chunk starts (position 0 always) -> (B, T) int64:
    the index of the chunk each position belongs to (the last start at or before it)."""
    return (starts.long().cumsum(1) - 1).clamp_min(0)
