"""Whole language models against hand-written PyTorch: GPT and LSTM LMs, their
parameter counts (module and cost model), and causality of the library specs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracle_helpers import (
    SPECS,
    RefAttention,
    assert_close,
    map_keys,
    max_err,
    randomize,
    spec_text,
)
from torch import nn

import archc
from archc.ir.cost import model_cost


def gpt_spec(vocab: int, d: int, heads: int, n: int, max_len: int) -> str:
    block = [
        {"residual": [{"norm": "layer"}, {"attention": {"heads": heads, "mask": "causal"}}]},
        {"residual": [{"norm": "layer"}, {"mlp": {"mult": 4, "act": "gelu"}}]},
    ]
    layers = [
        "embed",
        {"posenc": {"kind": "learned", "max_len": max_len}},
        {"repeat": {"n": n, "body": ["block"]}},
        {"norm": "layer"},
        {"head": {"tied": True}},
    ]
    return spec_text(layers, d_model=d, vocab=vocab, define={"block": block})


class RefGPTBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = RefAttention(d, heads, causal=True)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class RefGPT(nn.Module):
    """GPT LM by hand: (B, T) token ids -> (B, T, vocab) logits, head tied to the embedding."""

    def __init__(self, vocab: int, d: int, heads: int, n: int, max_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(max_len, d))
        self.blocks = nn.ModuleList(RefGPTBlock(d, heads) for _ in range(n))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln_f(x), self.tok.weight)


_GPT_KEYS = [
    (r"^layers\.0\.embed\.", "tok."),
    (r"^layers\.1\.posenc\.weight$", "pos"),
    (r"^layers\.2\.repeat\.(\d+)\.0\.block\.0\.residual\.0\.norm\.", r"blocks.\1.ln1."),
    (r"^layers\.2\.repeat\.(\d+)\.0\.block\.0\.residual\.1\.attention\.", r"blocks.\1.attn."),
    (r"^layers\.2\.repeat\.(\d+)\.0\.block\.1\.residual\.0\.norm\.", r"blocks.\1.ln2."),
    (r"^layers\.2\.repeat\.(\d+)\.0\.block\.1\.residual\.1\.mlp\.", r"blocks.\1."),
    (r"^layers\.3\.norm\.", "ln_f."),
]


def test_gpt_forward_equals_hand_written() -> None:
    vocab, d, heads, n, max_len = 61, 32, 4, 2, 40
    model = archc.compile(gpt_spec(vocab, d, heads, n, max_len), seed=7)
    randomize(model, 0.2)
    ref = RefGPT(vocab, d, heads, n, max_len)
    mapped = map_keys(model.state_dict(), _GPT_KEYS)
    assert set(mapped) == set(ref.state_dict())
    ref.load_state_dict(mapped)
    ids = torch.randint(0, vocab, (2, 11))
    assert_close(model(ids), ref(ids))


GPT_SIZES = {"small": (61, 32, 4, 2, 40), "library": (256, 128, 4, 4, 512)}


@pytest.mark.parametrize("size", list(GPT_SIZES))
def test_gpt_parameter_count(size: str) -> None:
    vocab, d, heads, n, max_len = GPT_SIZES[size]
    text = gpt_spec(vocab, d, heads, n, max_len)
    expected = sum(p.numel() for p in RefGPT(vocab, d, heads, n, max_len).parameters())
    model = archc.compile(text)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model_cost(archc.to_graph(text), seq_len=16).parameters == expected
    if size == "library":  # specs/gpt.yaml is this model
        assert model_cost(archc.to_graph(SPECS / "gpt.yaml"), 16).parameters == expected


class RefLSTMLM(nn.Module):
    def __init__(self, vocab: int, d: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


def lstm_lm_spec(vocab: int, d: int, hidden: int, layers: int) -> str:
    lm = ["embed", {"lstm": {"hidden": hidden, "layers": layers}}, "head"]
    return spec_text(lm, d_model=d, vocab=vocab)


_LSTM_KEYS = [
    (r"^layers\.0\.embed\.", "embed."),
    (r"^layers\.1\.lstm\.", "lstm."),
    (r"^layers\.2\.head\.", "head."),
]


def test_lstm_lm_equals_hand_written() -> None:
    vocab, d, hidden = 53, 16, 24
    text = lstm_lm_spec(vocab, d, hidden, 2)
    model = archc.compile(text, seed=4)
    ref = RefLSTMLM(vocab, d, hidden, 2)
    expected = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model_cost(archc.to_graph(text), 16).parameters == expected
    mapped = map_keys(model.state_dict(), _LSTM_KEYS)
    assert set(mapped) == set(ref.state_dict())
    ref.load_state_dict(mapped)
    ids = torch.randint(0, vocab, (2, 9))
    assert_close(model(ids), ref(ids))


def test_library_lstm_parameter_count() -> None:
    expected = sum(p.numel() for p in RefLSTMLM(256, 128, 128, 2).parameters())
    assert model_cost(archc.to_graph(SPECS / "lstm.yaml"), 16).parameters == expected
    assert sum(p.numel() for p in archc.compile(SPECS / "lstm.yaml").parameters()) == expected


@pytest.mark.parametrize(
    "name", ["gpt.yaml", "llama.yaml", "looped.yaml", "conv.yaml", "lstm.yaml"]
)
def test_library_lm_is_causal(name: str) -> None:
    model = archc.compile(SPECS / name)
    ids = torch.randint(0, 256, (1, 12))
    t = 5
    ids2 = ids.clone()
    ids2[:, t + 1 :] = (ids[:, t + 1 :] + 1 + torch.randint(0, 200, (1, 12 - t - 1))) % 256
    with torch.no_grad():
        y, y2 = model(ids), model(ids2)
    assert max_err(y[:, : t + 1], y2[:, : t + 1]) <= 1e-5
    assert max_err(y[:, t + 1 :], y2[:, t + 1 :]) > 1e-4  # the future tokens do matter


def test_small_gpt_is_causal() -> None:
    model = archc.compile(gpt_spec(61, 32, 4, 2, 40))
    ids = torch.randint(0, 61, (2, 10))
    ids2 = ids.clone()
    ids2[:, 6:] = (ids2[:, 6:] + 1) % 61
    assert max_err(model(ids)[:, :6], model(ids2)[:, :6]) <= 1e-6
