"""Top-k block retrieval + block-sparse attention against an explicit mask.

The oracle is written here from the rule itself, in float64: per query i (block
c = i // b) and head, the mean key of every complete block j < c is scored by q_i . kbar_j,
the top-k blocks are kept, and the allowed keys are the tokens of those blocks, the
tokens of block c up to i, and the `window` latest tokens; F.scaled_dot_product_attention
with that boolean mask gives the reference outputs and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from oracle_helpers import assert_values_and_grads_match

import archc
from archc.backends.torch.modules.sparse_attention import (
    block_sparse_attention,
    block_sparse_attention_step,
)


def _mask(
    q: torch.Tensor, k: torch.Tensor, block: int, topk: int, window: int | None
) -> torch.Tensor:
    """Allowed (B, H, T, T) positions; q, k (B, H, T, hd) (k already per query head)."""
    bsz, heads, t, _ = q.shape
    allowed = torch.zeros(bsz, heads, t, t, dtype=torch.bool)
    complete = t // block
    with torch.no_grad():
        kbar = [k[:, :, j * block : (j + 1) * block].mean(dim=2) for j in range(complete)]
        for b in range(bsz):
            for h in range(heads):
                for i in range(t):
                    c = i // block
                    scores = [float(q[b, h, i] @ kbar[j][b, h]) for j in range(c)]
                    best = sorted(range(c), key=lambda j: -scores[j])[:topk]
                    for j in best:
                        allowed[b, h, i, j * block : (j + 1) * block] = True
                    allowed[b, h, i, c * block : i + 1] = True
                    if window:
                        allowed[b, h, i, max(0, i - window + 1) : i + 1] = True
    return allowed


def _reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    kv_heads: int,
    block: int,
    topk: int,
    window: int | None,
) -> torch.Tensor:
    bsz, t, d = q.shape
    hd = d // heads
    qh = q.view(bsz, t, heads, hd).transpose(1, 2)
    kh = k.view(bsz, t, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    vh = v.view(bsz, t, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    mask = _mask(qh, kh, block, topk, window)
    y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return y.transpose(1, 2).reshape(bsz, t, d)


def _qkv(t: int, heads: int, kv_heads: int, hd: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, t, heads * hd), (2, t, kv_heads * hd), (2, t, kv_heads * hd)]
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


CASES = [
    # (T, heads, kv_heads, block, topk, window)
    (19, 2, 2, 4, 2, None),  # ragged last block
    (16, 2, 1, 4, 1, None),  # grouped-query heads
    (23, 2, 2, 3, 2, 5),  # window overlapping retrieved blocks
    (12, 1, 1, 4, 1, 9),  # window reaching past several blocks
    (1, 2, 2, 4, 2, 3),
    (7, 2, 2, 8, 2, None),  # one (partial) block: local causal attention only
]


@pytest.mark.parametrize("path", ["gather", "masked"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-H{}-KV{}-b{}-k{}-w{}".format(*c))
def test_matches_explicit_mask_outputs_and_gradients(case: tuple, path: str) -> None:
    t, heads, kvh, block, topk, window = case
    q, k, v = _qkv(t, heads, kvh, 6)
    y = block_sparse_attention(q, k, v, heads, kvh, block, topk, window, path=path)
    ref = _reference(q, k, v, heads, kvh, block, topk, window)
    assert_values_and_grads_match(y, ref, (q, k, v))


@pytest.mark.parametrize("path", ["gather", "masked"])
def test_query_chunks_give_the_same_result(path: str) -> None:
    """A tiny budget splits the queries into many chunks (5 queries, then 1)."""
    q, k, v = _qkv(21, 2, 1, 4, seed=4)
    whole = block_sparse_attention(q, k, v, 2, 1, 4, 2, 3, path=path)
    per_query = 2 * 2 * (21 if path == "masked" else (3 * 4 + 3) * 4)
    for budget in (5 * per_query, 1):
        chunked = block_sparse_attention(q, k, v, 2, 1, 4, 2, 3, path=path, budget=budget)
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", ["gather", "masked"])
def test_topk_covering_every_past_block_is_full_causal_attention(path: str) -> None:
    q, k, v = _qkv(21, 2, 2, 4, seed=1)
    y = block_sparse_attention(q, k, v, 2, 2, block=4, topk=6, window=None, path=path)
    qh, kh, vh = (x.view(2, 21, 2, 4).transpose(1, 2) for x in (q, k, v))
    full = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    torch.testing.assert_close(y, full.transpose(1, 2).reshape(2, 21, 8), rtol=1e-10, atol=1e-10)


def test_retrieval_is_sparse() -> None:
    """With topk=1 a late query cannot see a block it did not retrieve: outputs differ
    from full causal attention."""
    q, k, v = _qkv(32, 1, 1, 4, seed=2)
    y = block_sparse_attention(q, k, v, 1, 1, block=4, topk=1, window=None)
    full = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)[:, 0]
    assert (y[:, 12:] - full[:, 12:]).abs().max() > 1e-3
    torch.testing.assert_close(y[:, :8], full[:, :8])  # blocks 0, 1: everything retrieved


def test_streaming_chunks_equal_the_whole_sequence() -> None:
    q, k, v = _qkv(22, 2, 1, 4, seed=3)
    whole = block_sparse_attention(q, k, v, 2, 1, 4, 2, 3, path="gather")
    cache, parts = None, []
    for s, e in ((0, 5), (5, 6), (6, 17), (17, 22)):
        y, cache = block_sparse_attention_step(
            q[:, s:e], k[:, s:e], v[:, s:e], cache, 2, 1, 4, 2, 3
        )
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-10, atol=1e-10)


def _model(tmp_path, **attn: object) -> archc.CompiledModel:  # type: ignore[name-defined]
    spec = {
        "model": "sparse",
        "vocab": 16,
        "d_model": 16,
        "layers": [
            "embed",
            {"residual": [{"norm": "rms"}, {"sparse_attention": {"heads": 2, **attn}}]},
            {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
            {"residual": [{"norm": "rms"}, {"sparse_attention": {"heads": 2, **attn}}]},
            "head",
        ],
    }
    path = tmp_path / "sparse.yaml"
    path.write_text(yaml.safe_dump(spec))
    return archc.compile(path, seed=0).double().eval()


def test_perturbing_a_token_leaves_every_earlier_output_unchanged(tmp_path) -> None:
    model = _model(tmp_path, block=3, topk=1, window=2, pos="rope")
    x = torch.randint(0, 16, (2, 20), generator=torch.Generator().manual_seed(0))
    y = model(x)
    for t in (0, 4, 9, 15, 19):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 7) % 16
        y2 = model(x2)
        assert torch.equal(y2[:, :t], y[:, :t]), t
        assert (y2[:, t:] - y[:, t:]).abs().max() > 0


def test_compiled_model_streams_chunk_by_chunk(tmp_path) -> None:
    model = _model(tmp_path, block=4, topk=2)
    assert model.incremental_support() == (True, "")
    x = torch.randint(0, 16, (2, 18), generator=torch.Generator().manual_seed(1))
    whole = model(x)
    a, state = model(x[:, :7], return_state=True)
    b, state = model(x[:, 7:8], state=state, return_state=True)
    c = model(x[:, 8:], state=state)
    torch.testing.assert_close(torch.cat([a, b, c], dim=1), whole, rtol=1e-9, atol=1e-9)
