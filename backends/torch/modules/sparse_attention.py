"""Top-k block retrieval with block-sparse causal attention (landmark / HiP / DHSA style).

The key sequence is cut into blocks of `block` tokens, each summarised by the mean of
its keys. A query at position i in block c = i // block scores the summaries of the
complete blocks before its own (j < c), keeps the `topk` best, and attends with one
softmax over the tokens of those blocks, the tokens of its own block up to i, and
(optionally) the `window` most recent tokens not already covered. Only complete past
blocks are candidates, so nothing a query reads (selection included) depends on a
later token: the layer is exactly causal. The selection is a discrete choice: the
summaries get no gradient; keys learn through the attention over selected tokens.

Two levels (HiP / DHSA-style hierarchical pruning, `fanout` and `super_topk` set):
consecutive runs of `fanout` blocks form super-blocks, summarised by the mean of their
keys. A query first scores the complete super-blocks that end before its own block,
keeps the `super_topk` best, and only the blocks inside those super-blocks, plus the
complete blocks of its own (partial) super-block, compete for the `topk` block slots.
Scoring costs T / (fanout * block) + super_topk * fanout products per query instead of
T / block; with both top-ks covering everything it is dense causal attention.

Each query gathers at most (topk + 1) * block + window keys, so compute and memory grow
as T * (topk + 1) * block instead of T^2; queries run in chunks to bound the gathered
tensors. Every definition here uses math/torch/nn/F alone (copied into model.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from archc.backends.torch.modules.heads import repeat_kv, split_heads


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    kv_heads: int,
    block: int,
    topk: int,
    window: int | None,
    offset: int = 0,
    path: str = "auto",
    budget: int = 1 << 22,
    fanout: int | None = None,
    super_topk: int | None = None,
) -> torch.Tensor:
    """q (B, Tq, H*hd) at positions offset..offset+Tq-1; k, v (B, N, KV*hd) at positions
    0..N-1 with N = offset + Tq -> (B, Tq, H*hd).

    `path`: "gather" computes only the selected keys (cost T * L, L = (topk + 1) * block +
    window keys per query); "masked" turns the same selection into a boolean (Tq, N)
    mask for SDPA (cost T * N, but dense kernels); "auto" takes "masked" while N is
    within 16 L (and 2048), where the dense kernels are faster on a CPU, else "gather".
    Both give the same result. `fanout` / `super_topk` (both or neither) select in two
    levels (super-blocks of `fanout` blocks first; see the module docstring). Queries
    run in chunks whose gathered keys/values (or mask) hold about `budget` elements."""
    bsz, tq, d = q.shape
    n = k.shape[1]
    hd = d // heads
    qh, kh, vh = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    kh, vh = repeat_kv(kh, vh, heads)
    nb = -(-n // block)
    pad = nb * block - n
    # Padding completes the last block's storage; its (partial) summary is never a
    # candidate (only blocks before a query's own are) and its padded rows are masked.
    kp = F.pad(kh, (0, 0, 0, pad))
    vp = F.pad(vh, (0, 0, 0, pad))
    kk = min(topk, nb - 1)
    summaries = kp.view(bsz, heads, nb, block, hd).mean(dim=3) if kk > 0 else None
    supers = None
    if fanout is not None and summaries is not None:
        # Super-block summaries: the mean of its blocks' means (= the mean of its keys
        # when complete, the only case in which a super-block is a candidate).
        nsb = -(-nb // fanout)
        padded = F.pad(summaries, (0, 0, 0, nsb * fanout - nb))
        supers = (padded.view(bsz, heads, nsb, fanout, hd).mean(dim=3), fanout, super_topk)
    pos = torch.arange(offset, offset + tq, device=q.device)
    width = (max(kk, 0) + 1) * block + (window or 0)
    masked = path == "masked" or (path == "auto" and n <= min(16 * width, 2048))
    # Bound the gathered (B, H, chunk, L, hd) keys/values (or the (B, H, chunk, N) mask).
    per_query = bsz * heads * (n if masked else width * hd)
    chunk = max(1, budget // max(1, per_query))
    outs = []
    for s in range(0, tq, chunk):
        e = min(tq, s + chunk)
        idx, ok = _sparse_attention_keys(
            qh[:, :, s:e], summaries, pos[s:e], block, kk, window, supers
        )
        if masked:
            # The allowed set as a mask; scatter_add so that a masked duplicate index
            # (a clamped window slot) cannot overwrite an allowed one.
            hits = torch.zeros(bsz, heads, e - s, nb * block, device=q.device)
            mask = hits.scatter_add_(-1, idx, ok.to(hits.dtype))[..., :n] > 0
            outs.append(F.scaled_dot_product_attention(qh[:, :, s:e], kh, vh, attn_mask=mask))
        else:
            outs.append(_sparse_attention_gather(qh[:, :, s:e], kp, vp, idx, ok))
    y = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return y.transpose(1, 2).reshape(bsz, tq, d)


def _sparse_attention_keys(
    qc: torch.Tensor,
    summaries: torch.Tensor | None,
    pos: torch.Tensor,
    block: int,
    kk: int,
    window: int | None,
    supers: tuple[torch.Tensor, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys queries qc (B, H, C, hd) at positions `pos` (C,) may read: positions
    (B, H, C, L) and whether each is allowed. Retrieval is a discrete choice, made
    without building an autograd graph. `supers` (summaries (B, H, S, hd), fanout,
    super_topk) first narrows the candidate blocks to those of the kept super-blocks."""
    bsz, heads, c, _ = qc.shape
    dev = qc.device
    own = pos // block  # (C,) each query's block
    arange_b = torch.arange(block, device=dev)
    idx_parts, ok_parts = [], []
    sel = sel_ok = None
    if kk > 0 and summaries is not None:
        with torch.no_grad():
            scores = torch.einsum("bhcd,bhnd->bhcn", qc, summaries)
            past = torch.arange(summaries.shape[2], device=dev)[None, :] < own[:, None]
            if supers is not None:
                past = past & _super_allowed(qc, supers, own, summaries.shape[2])
            scores = scores.masked_fill(~past, float("-inf"))
            top = scores.topk(kk, dim=-1)
            sel, sel_ok = top.indices, torch.isfinite(top.values)  # (B, H, C, kk)
        idx_parts.append((sel[..., None] * block + arange_b).flatten(-2))  # (B, H, C, kk*b)
        ok_parts.append(sel_ok[..., None].expand(-1, -1, -1, -1, block).flatten(-2))
    local = own[:, None] * block + arange_b  # (C, block): the query's own block
    idx_parts.append(local.expand(bsz, heads, c, block))
    ok_parts.append((local <= pos[:, None]).expand(bsz, heads, c, block))
    if window:
        recent = pos[:, None] - window + 1 + torch.arange(window, device=dev)  # (C, w)
        ok = (recent >= 0) & (recent < (own * block)[:, None])  # before the own block
        ok = ok.expand(bsz, heads, c, window)
        if sel is not None and sel_ok is not None:
            # A recent token in a retrieved block is already there: count it once.
            hit = (recent // block)[None, None, :, :, None] == sel[..., None, :]
            ok = ok & ~(hit & sel_ok[..., None, :]).any(-1)
        idx_parts.append(recent.clamp_min(0).expand(bsz, heads, c, window))
        ok_parts.append(ok)
    return torch.cat(idx_parts, dim=-1), torch.cat(ok_parts, dim=-1)


def _super_allowed(
    qc: torch.Tensor, supers: tuple[torch.Tensor, int, int], own: torch.Tensor, nb: int
) -> torch.Tensor:
    """(B, H, C, nb): blocks inside the `super_topk` best complete super-blocks before
    each query's own block, or inside the query's own super-block (its complete blocks
    are always candidates, as the own block is at the block level)."""
    summ, fanout, ktop = supers
    dev = qc.device
    nsb = summ.shape[2]
    scores = torch.einsum("bhcd,bhsd->bhcs", qc, summ)
    # Complete: all `fanout` blocks of super-block u lie before the query's own block.
    done = (torch.arange(nsb, device=dev)[None, :] + 1) * fanout <= own[:, None]
    top = scores.masked_fill(~done, float("-inf")).topk(min(ktop, nsb), dim=-1)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept.scatter_(-1, top.indices, torch.isfinite(top.values))
    of_block = torch.arange(nb, device=dev) // fanout  # (nb,) each block's super-block
    return kept[..., of_block] | (of_block[None, :] == (own // fanout)[:, None])


def _sparse_attention_gather(
    qc: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, idx: torch.Tensor, ok: torch.Tensor
) -> torch.Tensor:
    """Softmax attention of qc (B, H, C, hd) over the keys/values kp, vp (B, H, N, hd)
    at positions idx (B, H, C, L) where ok: only the selected keys are touched."""
    bsz, heads, c, hd = qc.shape
    n = kp.shape[2]
    # Row indices into the flattened (B*H*N, hd) keys: plain indexing is faster than a
    # gather with an expanded index, forward and backward.
    rows = idx + (torch.arange(bsz * heads, device=qc.device) * n).view(bsz, heads, 1, 1)
    rows = rows.reshape(-1)
    kg = kp.reshape(-1, hd)[rows].view(bsz, heads, c, -1, hd)
    vg = vp.reshape(-1, hd)[rows].view(bsz, heads, c, -1, hd)
    # Elementwise products reduce faster than a batched matmul of (1, hd) rows.
    logits = (qc[..., None, :] * kg).sum(-1) / math.sqrt(hd)
    p = torch.softmax(logits.masked_fill(~ok, float("-inf")), dim=-1)
    return (p[..., None] * vg).sum(-2)


def block_sparse_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor] | None,
    heads: int,
    kv_heads: int,
    block: int,
    topk: int,
    window: int | None,
    fanout: int | None = None,
    super_topk: int | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A chunk q, k, v (B, T, .) continuing a sequence whose earlier keys/values are
    `cache` ((B, N, KV*hd) each, or None at the start). Returns (B, T, H*hd) and the
    cache extended by the chunk (every past block stays retrievable, so it grows)."""
    if cache is not None:
        k = torch.cat([cache[0], k], dim=1)
        v = torch.cat([cache[1], v], dim=1)
    offset = k.shape[1] - q.shape[1]
    y = block_sparse_attention(
        q,
        k,
        v,
        heads,
        kv_heads,
        block,
        topk,
        window,
        offset,
        fanout=fanout,
        super_topk=super_topk,
    )
    return y, (k, v)
