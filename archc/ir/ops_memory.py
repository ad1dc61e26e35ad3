"""The `memory` op (Titans' neural memory: an MLP per head written at test time by a
gradient step with momentum and decay, ATLAS's Omega window) and `titans_mac` (memory as
context). Their parameters are named as the attributes of their modules in
backends/torch/modules/memory.py (NeuralMemory, TitansMAC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import F32, INT, NUM, STR, AttrSpec, Cost, OpDef, ShapeError, float_seq
from archc.ir.types import Attrs, ParamSpec, Type

MEMORY_MODES = ("chunked", "sequential")


def memory_dims(attrs: Attrs, d: int) -> tuple[int, int, int]:
    """(heads, dk, dh): head width dk = D / heads; hidden width dh of a depth-2 memory."""
    heads = attrs["heads"]
    dk = d // heads
    return heads, dk, max(1, round(attrs["mult"] * dk))


def _check(attrs: Attrs, ins: Sequence[Type], what: str) -> tuple[Type, ...]:
    t = float_seq(ins[0], what)
    heads = attrs["heads"]
    if heads <= 0 or t.feature % heads:
        raise ShapeError(f"{what}: heads={heads} must divide the width {t.feature}")
    if attrs["depth"] not in (1, 2):
        raise ShapeError(f"{what}: depth must be 1 or 2, got {attrs['depth']}")
    if attrs["chunk"] <= 0 or attrs.get("window", 1) <= 0:
        raise ShapeError(f"{what}: chunk and window must be positive")
    return (t,)


def _memory_param_list(attrs: Attrs, d: int, prefix: str = "") -> list[ParamSpec]:
    heads, dk, dh = memory_dims(attrs, d)
    u = f"uniform({1.0 / math.sqrt(d)!r})"
    shapes = [(dk, dk)] if attrs["depth"] == 1 else [(dk, dh), (dh, dk)]
    ps = [
        ParamSpec(f"{prefix}weight_q", (d, d), u),
        ParamSpec(f"{prefix}weight_k", (d, d), u),
        ParamSpec(f"{prefix}weight_v", (d, d), u),
        # [learning rate, momentum, decay] gate pre-activations per head.
        ParamSpec(f"{prefix}weight_g", (3 * heads, d), u),
        ParamSpec(f"{prefix}bias_g", (3 * heads,), "zeros", decay=False),
    ]
    # The memory's initial weights, learned by the outer loop; std 1/sqrt(fan-in).
    ps += [
        ParamSpec(f"{prefix}w0.{i}", (heads, a, b), f"normal({1.0 / math.sqrt(a)!r})")
        for i, (a, b) in enumerate(shapes)
    ]
    ps.append(ParamSpec(f"{prefix}weight_o", (d, d), u))
    return ps


def _chunk_flops(attrs: Attrs, d: int, c: int, n: int, seq_len: int) -> tuple[float, float]:
    """Matmul-class (forward, backward) FLOPs per token and head of memory_chunk
    (modules/memory.py) on chunks of c queries whose windows cover n = c + window - 1
    keys, over a sequence of seq_len tokens.

    Forward: the memory's forward (2 n per weight entry) and backward (2 n per entry of
    the layers after the first) at the chunk start; the decay products A e0, A E,
    (A E theta) band and the momentum row (2 c^2, 2 c^3, 2 c^2 n, 2 c n); the read per
    layer (a, b): h W, h S (2 c a b each), h x^T and its product with the errors
    (2 c n (a + b)); the state updates x^T (coef d) of weights and momenta (2 n a b each).
    Backward: twice that, less one side of the products with the constant band, of
    h S while S is still the zero initial momentum (the first chunk), and all of the
    last chunk's state updates (nothing reads them).
    """
    _, dk, dh = memory_dims(attrs, d)
    shapes = [(dk, dk)] if attrs["depth"] == 1 else [(dk, dh), (dh, dk)]
    entries = sum(a * b for a, b in shapes)
    later = sum(a * b for a, b in shapes[1:])
    width = sum(a + b for a, b in shapes)
    band = 2.0 * c * c * n + 2.0 * c * n
    read_s = 2.0 * c * entries
    updates = 4.0 * n * entries
    per_chunk = (
        2.0 * n * (entries + later)
        + 2.0 * c * c * (1 + c)
        + band
        + 2.0 * read_s
        + 2.0 * c * n * width
        + updates
    )
    chunks = max(1, -(-seq_len // c))
    bwd = 2.0 * per_chunk - band - (read_s + 2.0 * updates) / chunks
    return per_chunk / c, bwd / c


def _memory_flops(attrs: Attrs, d: int, c: int, n: int, seq_len: int) -> tuple[float, float]:
    """Matmul-class (forward, backward) FLOPs per token: the projections q, k, v, o
    (D x D) and the gates (3 heads x D), plus every head's chunk work (_chunk_flops)."""
    heads = attrs["heads"]
    proj = 2.0 * d * (4 * d + 3 * heads)
    fwd, bwd = _chunk_flops(attrs, d, c, n, seq_len)
    return proj + heads * fwd, 2.0 * proj + heads * bwd


def _memory_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    d = float_seq(ins[0], "memory").feature
    heads, dk, dh = memory_dims(attrs, d)
    entries = dk * dk if attrs["depth"] == 1 else 2 * dk * dh
    c = 1 if attrs["mode"] == "sequential" else attrs["chunk"]
    c = min(c, T)  # one chunk covers a shorter sequence
    fwd, bwd = _memory_flops(attrs, d, c, c + attrs["window"] - 1, T)
    return Cost(
        flops=fwd,
        bwd_flops=bwd,
        # normalise q, k, v (~3 each), gates (~4), decay cumsums and exps (~2 c per head)
        ew_flops=9.0 * d + 12.0 * heads + 4.0 * heads * c,
        act_bytes=(5 * d + 3 * heads) * F32,
        # Weights and momenta of every head's memory.
        state_bytes=2 * heads * entries * F32,
    )


MEMORY_OP = OpDef(
    "memory",
    (1, 1),
    {
        "store": AttrSpec(STR, "mlp", ("mlp",)),
        "heads": AttrSpec(INT),
        "depth": AttrSpec(INT, 2),
        "mult": AttrSpec(NUM, 2.0),
        "chunk": AttrSpec(INT, 16),
        "window": AttrSpec(INT, 1),
        "lr": AttrSpec(NUM, 0.01),
        "mode": AttrSpec(STR, "chunked", MEMORY_MODES),
    },
    lambda a, i: _check(a, i, "memory"),
    lambda a, i: tuple(_memory_param_list(a, float_seq(i[0], "memory").feature)),
    _memory_cost,
    doc="Titans neural memory (B,T,D)->(B,T,D): per head an MLP (depth 1|2, hidden "
    "mult*D/heads) written by grad ||M(k)-v||^2 over the last `window` tokens (ATLAS "
    "Omega) with data-dependent lr (<= `lr`), momentum and decay; read M_t(q_t); "
    "`chunk`: gradients at the chunk-start memory; mode sequential: per token",
)


def _mac_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = float_seq(ins[0], "titans_mac").feature
    u = f"uniform({1.0 / math.sqrt(d)!r})"
    return (
        *_memory_param_list(attrs, d, "memory."),
        ParamSpec("weight_rq", (d, d), u),
        ParamSpec("weight_r", (d, d), u),
        ParamSpec("persist", (attrs["persist"], d), "normal(0.02)", decay=False),
        ParamSpec("weight_qkv", (3 * d, d), u),
        ParamSpec("weight_a", (d, d), u),
    )


def _mac_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    d = float_seq(ins[0], "titans_mac").feature
    heads, dk, dh = memory_dims(attrs, d)
    entries = dk * dk if attrs["depth"] == 1 else 2 * dk * dh
    c = min(attrs["chunk"], T)
    ctx = attrs["persist"] + 2 * c  # keys: persistent tokens, retrieved h and the segment
    # Per token: the retrieval M(W_rq x) (its D x D map, 2 per memory entry per head) and
    # W_r; q and the output map W_a (D x D each); k and v of the ctx keys per segment;
    # dense masked attention over them; then the memory's own work on the output.
    mem_fwd, mem_bwd = _memory_flops(attrs, d, c, c, T)
    own = 2.0 * d * d * 4 + 2.0 * heads * entries + 2.0 * d * 2 * d * ctx / c + 4.0 * d * ctx
    return Cost(
        flops=own + mem_fwd,
        bwd_flops=2.0 * own + mem_bwd,
        ew_flops=9.0 * d + 12.0 * heads + 4.0 * heads * c + 6.0 * heads * ctx + 3.0 * d,
        act_bytes=(10 * d + 3 * heads) * F32,
        state_bytes=2 * heads * entries * F32,
    )


MAC_OP = OpDef(
    "titans_mac",
    (1, 1),
    {
        "heads": AttrSpec(INT),
        "depth": AttrSpec(INT, 2),
        "mult": AttrSpec(NUM, 2.0),
        "chunk": AttrSpec(INT, 16),
        "persist": AttrSpec(INT, 4),
        "lr": AttrSpec(NUM, 0.01),
    },
    lambda a, i: _check(a, i, "titans_mac"),
    _mac_params,
    _mac_cost,
    doc="Titans memory as context (B,T,D)->(B,T,D): per segment of `chunk` tokens, "
    "attention over [persist tokens, memory retrieval, segment], then the memory writes "
    "the attention output; out = y * sigmoid(memory read)",
)
