"""Head bookkeeping shared by the attention functions (layers.py, sparse_attention.py)."""

from __future__ import annotations

import torch


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H*hd) -> (B, H, T, hd)."""
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def repeat_kv(kh: torch.Tensor, vh: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query keys/values (B, KV, N, hd) repeated to `heads` query heads."""
    kv_heads = kh.shape[1]
    if kv_heads == heads:
        return kh, vh
    return (
        kh.repeat_interleave(heads // kv_heads, dim=1),
        vh.repeat_interleave(heads // kv_heads, dim=1),
    )
