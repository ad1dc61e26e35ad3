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


def _memory_flops(attrs: Attrs, d: int, n_ctx: int) -> float:
    """Per token: projections (q, k, v, gates, o) plus, per head, the memory's forward and
    backward at the chunk start (3 matmuls per weight entry) and the read over a chunk
    of n_ctx tokens (the weight entries once more, plus C-wide attention-like terms)."""
    heads, dk, dh = memory_dims(attrs, d)
    entries = dk * dk if attrs["depth"] == 1 else 2 * dk * dh
    width = dk if attrs["depth"] == 1 else dk + dh
    proj = 2.0 * d * (4 * d + 3 * heads)
    return proj + heads * (2.0 * 4 * entries + 4.0 * n_ctx * width)


def _memory_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    d = float_seq(ins[0], "memory").feature
    heads, dk, dh = memory_dims(attrs, d)
    entries = dk * dk if attrs["depth"] == 1 else 2 * dk * dh
    c = 1 if attrs["mode"] == "sequential" else attrs["chunk"]
    return Cost(
        flops=_memory_flops(attrs, d, c + attrs["window"] - 1),
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
    c = attrs["chunk"]
    ctx = attrs["persist"] + c + 1  # persistent tokens, retrieved h_<=t and x_<=t (mean)
    flops = _memory_flops(attrs, d, c) + 2.0 * d * 6 * d + 4.0 * d * ctx
    return Cost(
        flops=flops, act_bytes=(10 * d + 3 * heads) * F32, state_bytes=2 * heads * entries * F32
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
