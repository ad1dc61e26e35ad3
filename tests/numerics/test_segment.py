"""Segment recurrence (`segment`) against hand-written float64 references.

The references follow the papers' equations with the compiled model's weights: RMT
(Bulatov et al. 2022) runs the body on [memory ; segment ; memory] and takes the
outputs at the write slots as the next memory; HMT recall (He et al. 2024) adds a
cross-attention read of a FIFO of past memories; the KV window (Transformer-XL, Dai et
al. 2019) equals full-sequence attention in which a token of segment s sees the tokens
from `w` before the segment's start up to itself. The block (RMS norm, causal attention,
GELU MLP) is written out here, not taken from archc.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import yaml

import archc
from archc.diagnostics import DiagnosticError

D, HEADS = 8, 2


def _spec(segment: dict[str, Any], blocks: int = 1) -> str:
    block = [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": HEADS}}]},
        {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
    ]
    return yaml.safe_dump(
        {
            "model": "segment-test",
            "d_model": D,
            "define": {"block": block},
            "layers": [{"segment": {**segment, "body": ["block"] * blocks}}],
        },
        sort_keys=False,
    )


def _model(segment: dict[str, Any], blocks: int = 1) -> Any:
    model = archc.compile(archc.load(_spec(segment, blocks)), seed=0).double()
    with torch.no_grad():  # memory tokens and norm gains away from their defaults
        for name, p in model.named_parameters():
            if name.endswith("memory") or name.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


# -- the reference block, written from the equations ----------------------------------------
def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def _attend(x: torch.Tensor, p: dict[str, torch.Tensor], allowed: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of x (B, T, D); allowed (T, T): query i may read key j."""
    b, t, d = x.shape
    hd = d // HEADS

    def heads(w: torch.Tensor) -> torch.Tensor:
        return (x @ w.t()).view(b, t, HEADS, hd).transpose(1, 2)

    q, k, v = heads(p["q.weight"]), heads(p["k.weight"]), heads(p["v.weight"])
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
    return out @ p["o.weight"].t()


def _block(x: torch.Tensor, w: dict[str, torch.Tensor], pre: str, allowed: torch.Tensor):
    """One pre-norm block: x + attn(rms(x)), then h + mlp(rms(h)); pre = '...block.'."""
    at = pre + "0.residual.1.attention."
    att = {k[len(at) :]: v for k, v in w.items() if k.startswith(at)}
    h = x + _attend(_rms(x, w[pre + "0.residual.0.norm.weight"]), att, allowed)
    mlp = pre + "1.residual."
    g = _rms(h, w[mlp + "0.norm.weight"])
    g = torch.nn.functional.gelu(g @ w[mlp + "1.mlp.up.weight"].t() + w[mlp + "1.mlp.up.bias"])
    return h + g @ w[mlp + "1.mlp.down.weight"].t() + w[mlp + "1.mlp.down.bias"]


def _body(x: torch.Tensor, w: dict[str, torch.Tensor], blocks: int, allowed=None):
    t = x.shape[1]
    if allowed is None:
        allowed = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(blocks):
        x = _block(x, w, f"layers.0.segment.body.{i}.block.", allowed)
    return x


def _rmt_reference(
    model: Any, x: torch.Tensor, k: int, n: int, recall: int, blocks: int, sensory: int = 0
):
    """The RMT / HMT recurrence, segment by segment: [memory ; sensory ; segment ; memory]
    with the sensory tokens the previous segment's last `sensory` inputs."""
    w = dict(model.state_dict())
    mem = w["layers.0.segment.memory"][None].expand(x.shape[0], n, D)
    fifo: list[torch.Tensor] = []
    prev = None
    tail = x[:, :0]
    outs = []
    for start in range(0, x.shape[1], k):
        seg = x[:, start : start + k]
        read = mem
        if recall and fifo:
            bank = torch.cat(fifo, 1)  # (B, N n, D)
            q = prev.mean(1) @ w["layers.0.segment.recall_q"].t()  # (B, D)
            keys = bank @ w["layers.0.segment.recall_k"].t()
            att = torch.softmax(torch.einsum("bd,bmd->bm", q, keys) / math.sqrt(D), -1)
            read = mem + torch.einsum("bm,bmd->bd", att, bank)[:, None]
        h = _body(torch.cat([read, tail, seg, read], 1), w, blocks)
        j = tail.shape[1]
        outs.append(h[:, n + j : n + j + seg.shape[1]])
        mem = h[:, n + j + seg.shape[1] :]
        tail = seg[:, seg.shape[1] - sensory :] if sensory else tail
        fifo = [*fifo, mem][-recall:] if recall else fifo
        prev = seg
    return torch.cat(outs, 1)


@pytest.mark.parametrize(
    ("k", "n", "recall", "blocks", "t", "sensory"),
    [
        (4, 2, 0, 1, 11, 0),
        (3, 1, 0, 2, 9, 0),
        (4, 2, 2, 1, 17, 0),
        (5, 3, 3, 2, 13, 0),
        (4, 2, 2, 1, 17, 2),
        (3, 1, 0, 2, 10, 3),
    ],
)
def test_memory_tokens_match_reference(
    k: int, n: int, recall: int, blocks: int, t: int, sensory: int
) -> None:
    carry = {"length": k, "carry": f"memory-tokens({n})", "recall": recall, "sensory": sensory}
    model = _model(carry, blocks)
    x = torch.randn(2, t, D, dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = _rmt_reference(model, x, k, n, recall, blocks, sensory)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("w", "k", "t"), [(4, 4, 13), (2, 3, 10), (6, 4, 12)])
def test_kv_window_matches_masked_attention(w: int, k: int, t: int) -> None:
    """Token i of segment s attends to tokens j with start(s) - w <= j <= i."""
    model = _model({"length": k, "carry": f"kv-window({w})"}, blocks=2)
    x = torch.randn(2, t, D, dtype=torch.float64)
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = (j <= i) & (j >= (i // k) * k - w)
    with torch.no_grad():
        got = model(x)
        want = _body(x, dict(model.state_dict()), 2, allowed)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _fast_weight_reference(model: Any, x: torch.Tensor, k: int, heads: int, blocks: int):
    """Read S before each segment, then write it token by token with the delta rule."""
    w = {
        n[len("layers.0.segment.fast.") :]: p
        for n, p in model.state_dict().items()
        if ".fast." in n
    }
    b, t, d = x.shape
    hd = d // heads
    S = torch.zeros(b, heads, hd, hd, dtype=x.dtype)

    def per_head(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # (B, heads, hd)
        return (h @ weight.t()).view(b, heads, hd)

    outs = []
    for start in range(0, t, k):
        seg = x[:, start : start + k]
        reads = []
        for i in range(seg.shape[1]):
            q = torch.nn.functional.normalize(per_head(seg[:, i], w["weight_q"]), dim=-1)
            reads.append(torch.einsum("bhi,bhij->bhj", q, S).reshape(b, d) @ w["weight_o"].t())
        y = _body(seg + torch.stack(reads, 1), dict(model.state_dict()), blocks)
        outs.append(y)
        for i in range(y.shape[1]):
            key = torch.nn.functional.normalize(per_head(y[:, i], w["weight_k"]), dim=-1)
            val = per_head(y[:, i], w["weight_v"])
            beta = torch.sigmoid(y[:, i] @ w["weight_beta"].t() + w["bias_beta"])  # (B, heads)
            err = val - torch.einsum("bhi,bhij->bhj", key, S)
            S = S + beta[:, :, None, None] * torch.einsum("bhi,bhj->bhij", key, err)
    return torch.cat(outs, 1)


@pytest.mark.parametrize(("k", "heads", "blocks", "t"), [(4, 2, 1, 11), (3, 1, 2, 9)])
def test_fast_weights_match_reference(k: int, heads: int, blocks: int, t: int) -> None:
    model = _model({"length": k, "carry": f"fast-weights({heads})"}, blocks)
    with torch.no_grad():  # a nonzero beta bias: the writes are not all half-strength
        model.get_submodule("layers.0.segment.fast").bias_beta.normal_()
    x = torch.randn(2, t, D, dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = _fast_weight_reference(model, x, k, heads, blocks)
    assert (got - _body(x, dict(model.state_dict()), blocks)).abs().max() > 1e-3  # S is read
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "segment",
    [
        {"length": 4, "carry": "memory-tokens(2)"},
        {"length": 4, "carry": "memory-tokens(2)", "recall": 2},
        {"length": 4, "carry": "memory-tokens(2)", "recall": 2, "sensory": 2},
        {"length": 3, "carry": "kv-window(4)"},
        {"length": 3, "carry": "fast-weights(2)"},
    ],
)
def test_causal(segment: dict[str, Any]) -> None:
    """Perturbing token t leaves every output before t unchanged (and changes t's)."""
    model = _model(segment, blocks=2)
    x = torch.randn(1, 14, D, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        for t in (0, 3, 4, 9, 13):
            x2 = x.clone()
            x2[:, t] += 1.0
            y = model(x2)
            torch.testing.assert_close(y[:, :t], base[:, :t], rtol=0, atol=0)
            assert (y[:, t] - base[:, t]).abs().max() > 1e-6


def _reach(model: Any, x: torch.Tensor, k: int, s: int) -> list[float]:
    """Gradient norm of segment s's outputs w.r.t. each earlier segment's inputs."""
    x = x.clone().requires_grad_(True)
    model(x)[:, s * k : (s + 1) * k].pow(2).sum().backward()
    assert x.grad is not None
    return [x.grad[:, r * k : (r + 1) * k].norm().item() for r in range(s + 1)]


@pytest.mark.parametrize("carry", ["memory-tokens(2)", "kv-window(3)", "fast-weights(2)"])
def test_bptt_depth(carry: str) -> None:
    """bptt: 1 -- segment s's loss never reaches segment s-2's inputs; without bptt it does."""
    k = 3
    x = torch.randn(1, 5 * k, D, dtype=torch.float64)
    full = _model({"length": k, "carry": carry}, blocks=2)
    cut = _model({"length": k, "carry": carry, "bptt": 1}, blocks=2)
    cut.load_state_dict(full.state_dict())
    assert all(g > 0 for g in _reach(full, x, k, 4)[3:])
    assert _reach(full, x, k, 4)[2] > 0  # the untruncated chain reaches back two segments
    for s in range(2, 5):
        reach = _reach(cut, x, k, s)
        assert all(g == 0.0 for g in reach[: s - 1]), (s, reach)
        assert reach[s] > 0
    assert _reach(cut, x, k, 3)[2] > 0  # one transition is still crossed


def test_bptt_zero_isolates_segments() -> None:
    k = 3
    model = _model({"length": k, "carry": "memory-tokens(1)", "bptt": 0})
    reach = _reach(model, torch.randn(1, 4 * k, D, dtype=torch.float64), k, 3)
    assert reach[:3] == [0.0, 0.0, 0.0] and reach[3] > 0


def test_memory_receives_gradient_through_write() -> None:
    """The write path trains: with bptt >= 1, the memory output of segment 0 gets gradient
    from segment 1's loss (the recall projections from the FIFO read)."""
    model = _model({"length": 3, "carry": "memory-tokens(2)", "recall": 2, "bptt": 1}).train()
    model(torch.randn(2, 9, D, dtype=torch.float64)).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"length": 4, "carry": "kv-window(4)", "recall": 2}, "recall reads a FIFO"),
        ({"length": 4, "carry": "memory(4)"}, "carry must be"),
        ({"length": 0}, "greater than 0"),
        ({"length": 4, "carry": "fast-weights(3)"}, "must divide the width 8"),
        ({"length": 4, "carry": "kv-window(4)", "sensory": 2}, "sensory memory is read"),
        ({"length": 4, "sensory": 5}, "exceeds the segment length"),
    ],
)
def test_spec_errors(segment: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError) as err:
        archc.to_graph(archc.load(_spec(segment)))
    assert message in str(err.value)


def _chunked(model: Any, x: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, dict]:
    ys, state, i = [], None, 0
    while i < x.shape[1]:
        c = sizes[len(ys) % len(sizes)]
        y, state = model(x[:, i : i + c], state=state, return_state=True)
        ys.append(y)
        i += c
    return torch.cat(ys, 1), state


@pytest.mark.parametrize(
    "segment",
    [
        {"length": 4, "carry": "memory-tokens(2)"},
        {"length": 3, "carry": "memory-tokens(2)", "recall": 2, "bptt": 1},
        {"length": 3, "carry": "memory-tokens(1)", "recall": 2, "sensory": 2},
        {"length": 4, "carry": "kv-window(5)"},
        {"length": 4, "carry": "fast-weights(2)", "bptt": 0},
    ],
)
def test_streaming_equals_full(segment: dict[str, Any]) -> None:
    """Chunk by chunk (a partial segment is rerun as tokens arrive) equals one call, and
    the carried state does not grow with the sequence."""
    model = _model(segment, blocks=2)
    assert model.incremental_support() == (True, "") and model.constant_state()
    x = torch.randn(2, 23, D, dtype=torch.float64)
    with torch.no_grad():
        full = model(x)
        for sizes in ([1], [3, 1, 4, 2, 7]):
            y, state = _chunked(model, x, sizes)
            torch.testing.assert_close(y, full, rtol=1e-10, atol=1e-10)
            assert state["_pos"] == 23

        def size(state: dict) -> int:
            leaves = [state]
            total = 0
            while leaves:
                v = leaves.pop()
                if isinstance(v, torch.Tensor):
                    total += v.numel()
                elif isinstance(v, dict):
                    leaves += list(v.values())
                elif isinstance(v, (list, tuple)):
                    leaves += list(v)
            return total

        k = segment["length"]
        short = size(model(x[:, : 2 * k], return_state=True)[1])
        long = size(model(torch.randn(2, 12 * k, D, dtype=torch.float64), return_state=True)[1])
        assert short == long


def test_streaming_inside_a_loop_and_with_conv() -> None:
    """Segments inside a loop keep one state entry per loop step; a kv-window body's conv
    continues across segments the same way in one call and chunk by chunk."""
    body = [{"residual": [{"norm": "rms"}, {"attention": {"heads": HEADS}}]}]
    seg = {"length": 4, "carry": "memory-tokens(2)", "recall": 2, "body": body}
    kv_body = [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": HEADS, "pos": "rope"}}]},
        {"residual": [{"conv1d": {"kernel": 3, "groups": "depthwise"}}]},
    ]
    spec = {
        "model": "segment-loop",
        "d_model": D,
        "layers": [
            {"loop": {"steps": 2, "body": [{"segment": seg}]}},
            {"segment": {"length": 3, "carry": "kv-window(4)", "body": kv_body}},
        ],
    }
    model = archc.compile(archc.load(yaml.safe_dump(spec)), seed=0).double().eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    x = torch.randn(2, 17, D, dtype=torch.float64)
    with torch.no_grad():
        y, state = _chunked(model, x, [3, 1, 5])
        torch.testing.assert_close(y, model(x), rtol=1e-10, atol=1e-10)
    assert sorted(state) == [
        "_pos",
        "layers.0.loop.0.0.segment#0",
        "layers.0.loop.0.0.segment#1",
        "layers.1.segment",
    ]
