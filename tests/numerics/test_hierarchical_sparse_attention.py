"""Two-level (hierarchical, HiP / DHSA-style) block selection of `sparse_attention`
against an explicit mask built here from the rule itself, in float64.

Rule, per query i (block c = i // b, super-block g = c // F) and head: the complete
super-blocks u ((u + 1) F <= c) are scored by q_i . (mean key of their F * b tokens)
and the `super_topk` best kept; the candidate blocks are the blocks j < c that lie in a
kept super-block or in g; those are scored by q_i . (mean key of block j) and the
`topk` best kept. Allowed keys: their tokens, block c up to i, and the `window` latest
tokens. F.scaled_dot_product_attention with that mask gives the reference.
"""

from __future__ import annotations

from typing import Any

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
from archc.diagnostics import DiagnosticError


def _mask(
    q: torch.Tensor, k: torch.Tensor, block: int, topk: int, window: int | None, fan: int, ks: int
) -> torch.Tensor:
    """Allowed (B, H, T, T) positions; q, k (B, H, T, hd) (k already per query head)."""
    bsz, heads, t, _ = q.shape
    allowed = torch.zeros(bsz, heads, t, t, dtype=torch.bool)
    sb = block * fan
    with torch.no_grad():
        for b in range(bsz):
            for h in range(heads):
                for i in range(t):
                    c, qi = i // block, q[b, h, i]
                    sup = [u for u in range(t // sb) if (u + 1) * fan <= c]
                    s_score = {u: float(qi @ k[b, h, u * sb : (u + 1) * sb].mean(0)) for u in sup}
                    kept = set(sorted(sup, key=lambda u: -s_score[u])[:ks]) | {c // fan}
                    cand = [j for j in range(c) if j // fan in kept]
                    j_score = {
                        j: float(qi @ k[b, h, j * block : (j + 1) * block].mean(0)) for j in cand
                    }
                    for j in sorted(cand, key=lambda j: -j_score[j])[:topk]:
                        allowed[b, h, i, j * block : (j + 1) * block] = True
                    allowed[b, h, i, c * block : i + 1] = True
                    if window:
                        allowed[b, h, i, max(0, i - window + 1) : i + 1] = True
    return allowed


def _heads(x: torch.Tensor, n: int, rep: int = 1) -> torch.Tensor:
    bsz, t, d = x.shape
    return x.view(bsz, t, n, d // n).transpose(1, 2).repeat_interleave(rep, 1)


def _reference(q, k, v, heads, kvh, block, topk, window, fan, ks) -> torch.Tensor:
    qh = _heads(q, heads)
    kh, vh = _heads(k, kvh, heads // kvh), _heads(v, kvh, heads // kvh)
    mask = _mask(qh, kh, block, topk, window, fan, ks)
    y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return y.transpose(1, 2).reshape(q.shape)


def _qkv(t: int, heads: int, kvh: int, hd: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, t, heads * hd), (2, t, kvh * hd), (2, t, kvh * hd)]
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


CASES = [
    # (T, heads, kv_heads, block, topk, window, fanout, super_topk)
    (40, 2, 2, 4, 2, None, 2, 1),  # 5 super-blocks of 8 tokens
    (37, 2, 1, 3, 2, 4, 3, 2),  # ragged tail, grouped-query heads, window
    (50, 1, 1, 2, 3, None, 4, 1),  # own partial super-block holds candidates too
    (9, 2, 2, 4, 1, None, 2, 1),  # no complete super-block yet
]


@pytest.mark.parametrize("path", ["gather", "masked"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-H{}-KV{}-b{}-k{}-w{}-F{}-S{}".format(*c))
def test_matches_explicit_hierarchical_mask(case: tuple, path: str) -> None:
    t, heads, kvh, block, topk, window, fan, ks = case
    q, k, v = _qkv(t, heads, kvh, 6)
    y = block_sparse_attention(
        q, k, v, heads, kvh, block, topk, window, path=path, fanout=fan, super_topk=ks
    )
    ref = _reference(q, k, v, heads, kvh, block, topk, window, fan, ks)
    assert_values_and_grads_match(y, ref, (q, k, v))


@pytest.mark.parametrize("path", ["gather", "masked"])
def test_top_ks_covering_everything_is_dense_causal_attention(path: str) -> None:
    q, k, v = _qkv(45, 2, 2, 4, seed=1)
    y = block_sparse_attention(
        q, k, v, 2, 2, block=4, topk=12, window=None, path=path, fanout=3, super_topk=4
    )
    qh, kh, vh = (_heads(x, 2) for x in (q, k, v))
    full = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    torch.testing.assert_close(y, full.transpose(1, 2).reshape(2, 45, 8), rtol=1e-10, atol=1e-10)


def test_super_level_prunes_blocks_flat_selection_would_keep() -> None:
    """topk covering every block: flat retrieval is dense attention, the two-level one
    is not (only one super-block of the past survives)."""
    q, k, v = _qkv(48, 1, 1, 4, seed=2)
    flat = block_sparse_attention(q, k, v, 1, 1, block=4, topk=12, window=None)
    two = block_sparse_attention(
        q, k, v, 1, 1, block=4, topk=12, window=None, fanout=2, super_topk=1
    )
    torch.testing.assert_close(two[:, :16], flat[:, :16])  # at most one complete super-block
    assert (two[:, 24:] - flat[:, 24:]).abs().max() > 1e-3


def test_streaming_chunks_equal_the_whole_sequence() -> None:
    q, k, v = _qkv(30, 2, 1, 4, seed=3)
    kw: dict[str, Any] = {"fanout": 2, "super_topk": 1}
    whole = block_sparse_attention(q, k, v, 2, 1, 3, 2, 2, path="gather", **kw)
    cache, parts = None, []
    for s, e in ((0, 5), (5, 6), (6, 19), (19, 30)):
        y, cache = block_sparse_attention_step(
            q[:, s:e], k[:, s:e], v[:, s:e], cache, 2, 1, 3, 2, 2, **kw
        )
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-10, atol=1e-10)


def _spec(tmp_path, **attn: object):
    layer = {"sparse_attention": {"heads": 2, **attn}}
    spec = {
        "model": "hsparse",
        "vocab": 16,
        "d_model": 16,
        "layers": [
            "embed",
            {"residual": [{"norm": "rms"}, layer]},
            {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
            {"residual": [{"norm": "rms"}, layer]},
            "head",
        ],
    }
    path = tmp_path / "hsparse.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_compiled_model_is_causal_and_streams(tmp_path) -> None:
    path = _spec(tmp_path, block=2, topk=2, window=2, levels=2, fanout=2, super_topk=1)
    model = archc.compile(path, seed=0).double().eval()
    x = torch.randint(0, 16, (2, 30), generator=torch.Generator().manual_seed(0))
    y = model(x)
    for t in (0, 5, 13, 29):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 7) % 16
        y2 = model(x2)
        assert torch.equal(y2[:, :t], y[:, :t]), t
        assert (y2[:, t:] - y[:, t:]).abs().max() > 0
    a, state = model(x[:, :11], return_state=True)
    b = model(x[:, 11:], state=state)
    torch.testing.assert_close(torch.cat([a, b], dim=1), y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("attn", "message"),
    [
        ({"levels": 2, "super_topk": 1}, "levels: 2 needs 'fanout'"),
        ({"levels": 2, "fanout": 2}, "levels: 2 needs 'super_topk'"),
        ({"fanout": 2}, "fanout applies to the hierarchical selection only"),
        ({"levels": 2, "fanout": 1, "super_topk": 1}, "fanout"),
        ({"levels": 3}, "levels"),
    ],
)
def test_bad_settings_are_located_spec_errors(tmp_path, attn: dict, message: str) -> None:
    path = _spec(tmp_path, block=2, topk=1, **attn)
    with pytest.raises(DiagnosticError, match=message) as err:
        archc.compile(path)
    assert "hsparse.yaml:" in str(err.value)
