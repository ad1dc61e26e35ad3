"""Attention `chunk` (TCNCA chunked attention) and `rank` (low-rank q/k projections)
against independent references built on F.scaled_dot_product_attention.

chunk C: each chunk of C tokens is run through SDPA on its own (causal inside the
chunk), so no query sees a key of another chunk. rank r: q = W_qb (W_qa x) and
k = W_kb (W_ka x) with W_qa, W_ka (r, D) shared by the heads and W_qb, W_kb (D, r).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from oracle_helpers import (
    assert_close,
    assert_located_error,
    randomize,
    run_in_chunks,
    spec_text,
)

import archc
from archc.ir.cost import model_cost

D, H = 32, 4


def _heads(x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, H, -1).transpose(1, 2)


def _ref_chunked(sd: dict[str, torch.Tensor], x: torch.Tensor, chunk: int, causal: bool):
    """Attention of each chunk of `x` (B, T, D) on its own, concatenated -> (B, T, D)."""
    p = "layers.0.attention."
    outs = []
    for xc in x.split(chunk, dim=1):
        q, k, v = (_heads(xc @ sd[f"{p}{n}.weight"].T) for n in "qkv")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        outs.append(y.transpose(1, 2).reshape(xc.shape) @ sd[f"{p}o.weight"].T)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(
    ("t", "chunk", "mask"),
    [(12, 4, "causal"), (13, 4, "causal"), (13, 5, "none"), (3, 8, "causal")],
)
def test_chunked_attention_equals_sdpa_per_chunk(t: int, chunk: int, mask: str) -> None:
    model = archc.compile(
        spec_text([{"attention": {"heads": H, "chunk": chunk, "mask": mask}}], d_model=D), seed=1
    )
    x = torch.randn(2, t, D)
    ref = _ref_chunked(model.state_dict(), x, chunk, mask == "causal")
    assert_close(model(x), ref)


def test_chunked_attention_is_causal_and_blind_across_chunks() -> None:
    model = archc.compile(spec_text([{"attention": {"heads": H, "chunk": 4}}], d_model=D), seed=1)
    x = torch.randn(1, 12, D)
    y = model(x)
    x2 = x.clone()
    x2[:, 6] += 1.0  # inside the second chunk (positions 4..7)
    y2 = model(x2)
    assert torch.equal(y[:, :6], y2[:, :6])  # the past is untouched
    assert not torch.allclose(y[:, 6:8], y2[:, 6:8])  # later tokens of the chunk see it
    assert torch.equal(y[:, 8:], y2[:, 8:])  # the next chunk does not


def test_chunked_attention_streams_in_pieces() -> None:
    spec = spec_text(
        ["embed", {"attention": {"heads": H, "chunk": 4}}, "head"], d_model=D, vocab=16
    )
    model = archc.compile(spec, seed=3)
    randomize(model)
    ids = torch.randint(0, 16, (2, 11))
    full = model(ids)
    for sizes in ((1,) * 11, (3, 5, 3), (4, 4, 3), (6, 5)):
        y, state = run_in_chunks(model, ids, sizes)
        assert_close(y, full)
        # The cache holds only the current chunk's keys: 11 = 2 * 4 + 3.
        cache = next(v for v in state.values() if isinstance(v, tuple))
        assert cache[0].shape[2] == 3


def test_chunk_cost_depends_on_chunk_not_t() -> None:
    graph = archc.to_graph(spec_text([{"attention": {"heads": H, "chunk": 8}}], d_model=D))
    costs = [model_cost(graph, seq_len=t) for t in (64, 512)]
    # Projections q, k, v, o (2 D^2 each) plus 4 D C for the chunk's scores and values.
    expect = 4 * 2 * D * D + 4 * D * 8
    assert costs[0].forward_flops_per_token == costs[1].forward_flops_per_token == expect
    assert costs[0].kv_cache_bytes_per_token == 0
    assert costs[0].state_bytes_per_sequence == 2 * D * 4 * 7  # k and v of 7 keys, fp32


def _ref_lowrank(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    p = "layers.0.attention."
    q = _heads(x @ sd[f"{p}q_a.weight"].T @ sd[f"{p}q_b.weight"].T)
    k = _heads(x @ sd[f"{p}k_a.weight"].T @ sd[f"{p}k_b.weight"].T)
    v = _heads(x @ sd[f"{p}v.weight"].T)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(x.shape) @ sd[f"{p}o.weight"].T


def test_lowrank_attention_equals_factorized_sdpa() -> None:
    model = archc.compile(spec_text([{"attention": {"heads": H, "rank": 4}}], d_model=D), seed=5)
    sd = model.state_dict()
    assert sd["layers.0.attention.q_a.weight"].shape == (4, D)
    assert sd["layers.0.attention.q_b.weight"].shape == (D, 4)
    x = torch.randn(2, 9, D)
    assert_close(model(x), _ref_lowrank(sd, x))
    # Each head's score matrix q k^T has rank <= 4 (here 9 x 9).
    q = _heads(x @ sd["layers.0.attention.q_a.weight"].T @ sd["layers.0.attention.q_b.weight"].T)
    k = _heads(x @ sd["layers.0.attention.k_a.weight"].T @ sd["layers.0.attention.k_b.weight"].T)
    assert int(torch.linalg.matrix_rank(q[0, 0] @ k[0, 0].T)) <= 4


def test_lowrank_parameter_count() -> None:
    model = archc.compile(spec_text([{"attention": {"heads": H, "rank": 4}}], d_model=D), seed=0)
    n = sum(p.numel() for p in model.parameters())
    assert n == 2 * (4 * D + D * 4) + 2 * D * D


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ("{heads: 4, window: 8, chunk: 4}", "chunk", "'window' or 'chunk', not both"),
        ("{heads: 4, rank: 32}", "rank", "rank=32 is not low-rank"),
    ],
)
def test_invalid_combinations_are_located_errors(
    params: str, key: str, message: str, tmp_path: Path
) -> None:
    assert_located_error(tmp_path, 32, "attention", params, key, message)
