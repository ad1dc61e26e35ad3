"""Compiled modules against independent oracles.

Every expected value here comes from something other than archc's own code: torch's
nn.LSTM/GRU/RNN with weights copied by name, float64 step-by-step recurrences,
hand-written attention on F.scaled_dot_product_attention (masks, rope and GQA built
here), F.conv1d with explicit padding, and plain formulas for norms, activations and
MLPs. Shapes are tiny so the whole file runs in a few seconds on two CPU cores.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import archc
from archc.ir.cost import model_cost

SPECS = Path(__file__).resolve().parents[2] / "specs"
TOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def spec_text(
    layers: list[Any],
    d_model: int = 16,
    vocab: int | None = None,
    define: dict[str, Any] | None = None,
) -> str:
    """YAML text of a spec (features input unless the layers start with embed)."""
    data: dict[str, Any] = {"model": "oracle"}
    if vocab is not None:
        data["vocab"] = vocab
    data["d_model"] = d_model
    if define:
        data["define"] = define
    data["layers"] = layers
    return yaml.safe_dump(data, sort_keys=False)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    err = max_err(a, b)
    assert err <= tol, f"max abs error {err:.3e} > {tol:.0e}"


def randomize(model: nn.Module, scale: float = 0.3) -> None:
    """Give every parameter random values (so ones/zeros initialisers hide nothing)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)


# -- recurrences: nn.LSTM / nn.GRU / nn.RNN ------------------------------------------------------

RECURRENT = {
    "lstm": ({"lstm": {}}, nn.LSTM, {}),
    "gru": ({"gru": {}}, nn.GRU, {}),
    "rnn_tanh": ({"rnn": {"act": "tanh"}}, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": ({"rnn": {"act": "relu"}}, nn.RNN, {"nonlinearity": "relu"}),
}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(RECURRENT))
def test_recurrent_equals_torch(cell: str, bidirectional: bool, with_state: bool) -> None:
    layer, cls, kw = RECURRENT[cell]
    ((kind, extra),) = layer.items()
    params = {"hidden": 24, "layers": 2, "bidirectional": bidirectional, **extra}
    model = archc.compile(spec_text([{kind: params}], d_model=16), seed=3)
    ref = cls(16, 24, num_layers=2, batch_first=True, bidirectional=bidirectional, **kw)
    path = f"layers.0.{kind}"
    sd = model.state_dict()
    assert all(k.startswith(path + ".") for k in sd), list(sd)
    ref.load_state_dict({k.removeprefix(path + "."): v for k, v in sd.items()})  # strict

    x = torch.randn(3, 7, 16)
    init: Any = None
    if with_state:
        n = 2 * (2 if bidirectional else 1)
        h0 = torch.randn(n, 3, 24)
        init = (h0, torch.randn(n, 3, 24)) if cell == "lstm" else h0
    y, states = model(x, state=None if init is None else {path: init}, return_state=True)
    y_ref, s_ref = ref(x, init)
    assert y.shape == (3, 7, 24 * (2 if bidirectional else 1))
    assert_close(y, y_ref)
    assert set(states) == {path}
    if cell == "lstm":
        h, c = states[path]
        assert_close(h, s_ref[0])
        assert_close(c, s_ref[1])
    else:
        assert_close(states[path], s_ref)
    # Without return_state the module returns the output alone.
    assert_close(model(x, state=None if init is None else {path: init}), y_ref)


def _lstm_f64(x: torch.Tensor, p: dict[str, torch.Tensor], hidden: int) -> tuple[Any, ...]:
    """One LSTM layer, step by step in float64 (gates i, f, g, o)."""
    b, t, _ = x.shape
    h = torch.zeros(b, hidden, dtype=torch.float64)
    c = torch.zeros(b, hidden, dtype=torch.float64)
    w_ih, w_hh = p["weight_ih_l0"].double(), p["weight_hh_l0"].double()
    bias = p["bias_ih_l0"].double() + p["bias_hh_l0"].double()
    ys = []
    for s in range(t):
        z = x[:, s].double() @ w_ih.T + h @ w_hh.T + bias
        i, f, g, o = z.split(hidden, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, 1), h, c


def _gru_f64(x: torch.Tensor, p: dict[str, torch.Tensor], hidden: int) -> tuple[Any, ...]:
    """One GRU layer, step by step in float64 (gates r, z, n; n sees r * (W_hn h + b_hn))."""
    b, t, _ = x.shape
    h = torch.zeros(b, hidden, dtype=torch.float64)
    w_ih, w_hh = p["weight_ih_l0"].double(), p["weight_hh_l0"].double()
    b_ih, b_hh = p["bias_ih_l0"].double(), p["bias_hh_l0"].double()
    ys = []
    for s in range(t):
        gi = x[:, s].double() @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        ir, iz, in_ = gi.split(hidden, dim=-1)
        hr, hz, hn = gh.split(hidden, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys, 1), h


def _rnn_f64(x: torch.Tensor, p: dict[str, torch.Tensor], act: str) -> tuple[Any, ...]:
    b, t, _ = x.shape
    hidden = p["weight_hh_l0"].shape[0]
    h = torch.zeros(b, hidden, dtype=torch.float64)
    fn = torch.tanh if act == "tanh" else torch.relu
    ys = []
    for s in range(t):
        h = fn(
            x[:, s].double() @ p["weight_ih_l0"].double().T
            + p["bias_ih_l0"].double()
            + h @ p["weight_hh_l0"].double().T
            + p["bias_hh_l0"].double()
        )
        ys.append(h)
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("cell", list(RECURRENT))
def test_single_layer_recurrence_equals_float64_steps(cell: str) -> None:
    layer, _, _ = RECURRENT[cell]
    ((kind, extra),) = layer.items()
    model = archc.compile(spec_text([{kind: {"hidden": 12, **extra}}], d_model=8), seed=5)
    p = {k.split(".")[-1]: v for k, v in model.state_dict().items()}
    x = torch.randn(2, 6, 8)
    y, states = model(x, return_state=True)
    final = states[f"layers.0.{kind}"]
    if cell == "lstm":
        y_ref, h_ref, c_ref = _lstm_f64(x, p, 12)
        assert_close(final[0][0], h_ref)
        assert_close(final[1][0], c_ref)
    elif cell == "gru":
        y_ref, h_ref = _gru_f64(x, p, 12)
        assert_close(final[0], h_ref)
    else:
        y_ref, h_ref = _rnn_f64(x, p, extra["act"])
        assert_close(final[0], h_ref)
    assert_close(y, y_ref)


# -- attention -----------------------------------------------------------------------------------


def ref_mask(t: int, causal: bool, window: int | None) -> torch.Tensor | None:
    """Boolean (T, T) mask, True where query i may attend to key j."""
    if not causal and window is None:
        return None
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = torch.ones(t, t, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= (i - j).abs() < window
    return allowed


def ref_rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate-half rotary embedding of x (B, H, T, hd); angles and products in float64."""
    t, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    freqs = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * freqs[None, :]  # (T, half)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x.double()[..., :half], x.double()[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


class RefAttention(nn.Module):
    """Multi-head attention written out: q/k/v/o linears, own masks, rope and GQA."""

    def __init__(
        self,
        d: int,
        heads: int,
        kv_heads: int | None = None,
        causal: bool = True,
        window: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.h, self.kv = heads, kv_heads or heads
        self.hd = d // heads
        self.causal, self.window, self.rope, self.base = causal, window, rope, rope_base
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, self.kv * self.hd, bias=bias)
        self.v = nn.Linear(d, self.kv * self.hd, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        if self.rope:
            q, k = ref_rope(q, self.base), ref_rope(k, self.base)
        if self.kv != self.h:
            owner = torch.arange(self.h) // (self.h // self.kv)  # query head -> its kv head
            k, v = k[:, owner], v[:, owner]
        mask = ref_mask(t, self.causal, self.window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


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


# -- GPT-style and LSTM language models against hand-written modules -----------------------------


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


def map_keys(sd: dict[str, torch.Tensor], table: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        for pattern, repl in table:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                out[new] = value
                break
        else:
            raise AssertionError(f"compiled key {key!r} has no counterpart in the reference")
    return out


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


# -- conv1d --------------------------------------------------------------------------------------

CONV = {
    "k3": {"kernel": 3},
    "k3_dil2": {"kernel": 3, "dilation": 2},
    "k4_depthwise": {"kernel": 4, "groups": "depthwise"},
    "k3_depthwise_dil3": {"kernel": 3, "groups": "depthwise", "dilation": 3},
    "depthwise_mult2": {"kernel": 2, "groups": "depthwise", "out": 16},
    "groups2_out12": {"kernel": 2, "groups": 2, "out": 12},
    "k3_nobias": {"kernel": 3, "bias": False},
    "k1": {"kernel": 1},
    "k3_noncausal": {"kernel": 3, "causal": False},
    "k4_noncausal_dil2": {"kernel": 4, "causal": False, "dilation": 2},
    "k4_depthwise_noncausal": {"kernel": 4, "causal": False, "groups": "depthwise"},
}


def ref_conv(x: torch.Tensor, p: dict[str, Any], w: torch.Tensor, b: torch.Tensor | None):
    """(B, T, D) -> (B, T, out) with F.conv1d; causal pads dilation*(kernel-1) on the left."""
    d = x.shape[-1]
    groups = d if p.get("groups") == "depthwise" else p.get("groups", 1)
    dil = p.get("dilation", 1)
    h = x.transpose(1, 2)
    if p.get("causal", True):
        h = F.pad(h, (dil * (p["kernel"] - 1), 0))
        y = F.conv1d(h, w, b, dilation=dil, groups=groups)
    else:
        y = F.conv1d(h, w, b, padding="same", dilation=dil, groups=groups)
    return y.transpose(1, 2)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("name", list(CONV))
def test_conv1d_equals_reference(name: str) -> None:
    p = CONV[name]
    model = archc.compile(spec_text([{"conv1d": p}], d_model=8), seed=6)
    randomize(model)
    sd = model.state_dict()
    assert set(sd) == {"layers.0.conv1d.weight"} | (
        {"layers.0.conv1d.bias"} if p.get("bias", True) else set()
    )
    w = sd["layers.0.conv1d.weight"]
    d_in, groups = 8, 8 if p.get("groups") == "depthwise" else p.get("groups", 1)
    assert w.shape == (p.get("out", 8), d_in // groups, p["kernel"])
    x = torch.randn(2, 13, 8)
    assert_close(model(x), ref_conv(x, p, w, sd.get("layers.0.conv1d.bias")))


@pytest.mark.parametrize("name", [n for n, p in CONV.items() if p.get("causal", True)])
def test_conv1d_is_causal(name: str) -> None:
    model = archc.compile(spec_text([{"conv1d": CONV[name]}], d_model=8), seed=6)
    x = torch.randn(1, 12, 8)
    for t in (0, 5, 10):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(1, 12 - t - 1, 8)
        assert max_err(model(x)[:, : t + 1], model(x2)[:, : t + 1]) == 0.0


# -- norms, activations, MLPs --------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_equals_formula(kind: str, affine: bool) -> None:
    eps = 1e-3
    model = archc.compile(
        spec_text([{"norm": {"kind": kind, "eps": eps, "affine": affine}}], d_model=12)
    )
    randomize(model)
    sd = model.state_dict()
    x = torch.randn(2, 5, 12) * 3 + 0.5
    if kind == "rms":
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    else:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + eps)
    if affine:
        y = y * sd["layers.0.norm.weight"]
        if kind == "layer":
            y = y + sd["layers.0.norm.bias"]
    else:
        assert not sd
    assert_close(model(x), y)


ACTS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("fn", list(ACTS))
def test_activation_equals_formula(fn: str) -> None:
    model = archc.compile(spec_text([{"act": fn}], d_model=8))
    x = torch.randn(2, 5, 8) * 2
    assert_close(model(x), ACTS[fn](x))


MLPS = {
    "gelu": {"mult": 4, "act": "gelu"},
    "relu_hidden20": {"hidden": 20, "act": "relu"},
    "silu_nobias": {"mult": 2, "act": "silu", "bias": False},
    "gelu_tanh_mult1.5": {"mult": 1.5, "act": "gelu_tanh"},
    "swiglu": {"mult": 2, "act": "swiglu"},
    "swiglu_nobias_hidden24": {"hidden": 24, "act": "swiglu", "bias": False},
    "geglu": {"mult": 2, "act": "geglu"},
    "reglu": {"mult": 2, "act": "reglu"},
}
_GATE_ACT = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}


@pytest.mark.parametrize("name", list(MLPS))
def test_mlp_equals_formula(name: str) -> None:
    p = MLPS[name]
    d = 12
    model = archc.compile(spec_text([{"mlp": p}], d_model=d))
    randomize(model)
    sd = {k.removeprefix("layers.0.mlp."): v for k, v in model.state_dict().items()}
    hidden = p.get("hidden") or round(p["mult"] * d)
    bias = p.get("bias", True)
    names = {"up", "down"} | ({"gate"} if p["act"] in _GATE_ACT else set())
    assert set(sd) == {
        f"{n}.{w}" for n in names for w in (("weight", "bias") if bias else ("weight",))
    }
    assert sd["up.weight"].shape == (hidden, d) and sd["down.weight"].shape == (d, hidden)

    def lin(x: torch.Tensor, n: str) -> torch.Tensor:
        y = x @ sd[f"{n}.weight"].T
        return y + sd[f"{n}.bias"] if bias else y

    x = torch.randn(2, 5, d)
    if p["act"] in _GATE_ACT:
        h = ACTS[_GATE_ACT[p["act"]]](lin(x, "gate")) * lin(x, "up")
    else:
        h = ACTS[p["act"]](lin(x, "up"))
    assert_close(model(x), lin(h, "down"))


# -- loops ---------------------------------------------------------------------------------------

LOOP_BODY = [{"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]}]


class RefBody(nn.Module):
    """x + down(gelu(up(rmsnorm(x)))) by hand."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(d))
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * self.norm_weight
        return x + self.down(ACTS["gelu"](self.up(h)))


def _body_from(model: nn.Module, copy: int, d: int) -> RefBody:
    sd = model.state_dict()
    pre = f"layers.0.loop.{copy}.0.residual."
    body = RefBody(d)
    body.load_state_dict(
        {
            "norm_weight": sd[pre + "0.norm.weight"],
            "up.weight": sd[pre + "1.mlp.up.weight"],
            "up.bias": sd[pre + "1.mlp.up.bias"],
            "down.weight": sd[pre + "1.mlp.down.weight"],
            "down.bias": sd[pre + "1.mlp.down.bias"],
        }
    )
    return body


# (tie, steps, distinct copies, which copy runs at each step)
LOOPS = {
    "all": ("all", 4, 1, [0, 0, 0, 0]),
    "none": ("none", 4, 4, [0, 1, 2, 3]),
    "cycle2": ("cycle(2)", 4, 2, [0, 1, 0, 1]),
    "cycle3_steps4": ("cycle(3)", 4, 3, [0, 1, 2, 0]),
    "cycle8_steps3": ("cycle(8)", 3, 3, [0, 1, 2]),
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_tying_parameters_and_output(name: str) -> None:
    tie, steps, copies, schedule = LOOPS[name]
    d = 16
    text = spec_text([{"loop": {"steps": steps, "tie": tie, "body": LOOP_BODY}}], d_model=d)
    model = archc.compile(text, seed=8)
    randomize(model)
    body_params = sum(p.numel() for p in RefBody(d).parameters())
    assert sum(p.numel() for p in model.parameters()) == copies * body_params
    assert model_cost(archc.to_graph(text), 16).parameters == copies * body_params
    bodies = [_body_from(model, c, d) for c in range(copies)]
    x = torch.randn(2, 5, d)
    y = x
    for c in schedule:
        y = bodies[c](y)
    assert_close(model(x), y)


def test_loop_tie_all_is_the_same_body_applied_steps_times() -> None:
    d = 16
    model = archc.compile(spec_text([{"loop": {"steps": 4, "body": LOOP_BODY}}], d_model=d), seed=9)
    randomize(model)
    body = _body_from(model, 0, d)
    x = torch.randn(2, 5, d)
    assert_close(model(x), body(body(body(body(x)))))
    # One step of the loop is not the answer: the loop really runs 4 times.
    assert max_err(model(x), body(x)) > 1e-3
