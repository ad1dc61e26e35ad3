"""Attention and position encodings against hand-written references.

The reference builds its own masks, rope and GQA on F.scaled_dot_product_attention;
positions are checked against their textbook formulas.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from oracle_helpers import RefAttention, assert_close, max_err, randomize, spec_text
from torch import nn

import archc

ATTENTION = {
    "causal": {"heads": 4},
    "gqa2": {"heads": 4, "kv_heads": 2},
    "mqa": {"heads": 4, "kv_heads": 1},
    "window3": {"heads": 4, "window": 3},
    "nomask": {"heads": 4, "mask": "none"},
    "nomask_window3": {"heads": 4, "mask": "none", "window": 3},
    "rope": {"heads": 4, "pos": "rope"},
    "rope_base500": {"heads": 2, "pos": "rope", "rope_base": 500.0},
    "gqa_rope_window": {"heads": 4, "kv_heads": 2, "pos": "rope", "window": 3},
    "bias": {"heads": 2, "bias": True},
}


def _ref_attention(d: int, p: dict[str, Any]) -> RefAttention:
    return RefAttention(
        d,
        p["heads"],
        p.get("kv_heads"),
        causal=p.get("mask", "causal") == "causal",
        window=p.get("window"),
        rope=p.get("pos") == "rope",
        rope_base=p.get("rope_base", 10000.0),
        bias=p.get("bias", False),
    )


def _copy_by_name(model: nn.Module, ref: nn.Module, prefix: str) -> None:
    sd = model.state_dict()
    assert all(k.startswith(prefix) for k in sd), list(sd)
    ref.load_state_dict({k.removeprefix(prefix): v for k, v in sd.items()})  # strict


@pytest.mark.parametrize("name", list(ATTENTION))
def test_attention_equals_reference(name: str) -> None:
    p = ATTENTION[name]
    model = archc.compile(spec_text([{"attention": p}], d_model=32), seed=2)
    if p.get("bias"):
        randomize(model)  # biases start at zero
    ref = _ref_attention(32, p)
    _copy_by_name(model, ref, "layers.0.attention.")
    x = torch.randn(2, 9, 32)
    assert_close(model(x), ref(x))


@pytest.mark.parametrize("name", ["causal", "window3", "gqa_rope_window", "rope", "nomask"])
def test_attention_causality(name: str) -> None:
    p = ATTENTION[name]
    model = archc.compile(spec_text([{"attention": p}], d_model=32), seed=2)
    x = torch.randn(1, 10, 32)
    t = 4
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn(1, 10 - t - 1, 32)
    y, y2 = model(x), model(x2)
    past = max_err(y[:, : t + 1], y2[:, : t + 1])
    if p.get("mask") == "none":
        assert past > 1e-3  # sanity: without a mask the past does see the future
    else:
        assert past <= 1e-6


def test_rope_trains_after_an_inference_mode_forward() -> None:
    model = archc.compile(spec_text([{"attention": {"heads": 2, "pos": "rope"}}], d_model=16))
    x = torch.randn(1, 5, 16)
    with torch.inference_mode():
        model(x)  # e.g. an evaluation or generation pass before training
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sinusoidal_positions_equal_formula() -> None:
    d, t = 8, 7
    model = archc.compile(spec_text([{"posenc": {"kind": "sinusoidal"}}], d_model=d))
    assert not list(model.parameters())
    x = torch.randn(2, t, d)
    pe = torch.zeros(t, d, dtype=torch.float64)
    for pos in range(t):
        for i in range(0, d, 2):
            angle = pos / 10000.0 ** (i / d)
            pe[pos, i], pe[pos, i + 1] = math.sin(angle), math.cos(angle)
    assert_close(model(x), x + pe.float())


def test_learned_positions_add_the_table_rows() -> None:
    model = archc.compile(spec_text([{"posenc": {"kind": "learned", "max_len": 9}}], d_model=4))
    table = model.state_dict()["layers.0.posenc.weight"]
    assert table.shape == (9, 4)
    x = torch.randn(2, 6, 4)
    assert_close(model(x), x + table[:6])
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randn(1, 10, 4))
