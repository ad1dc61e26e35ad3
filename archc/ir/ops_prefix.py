"""The prefix-conditioned ops: `seq2seq` (LSTM encoder over the first `source` tokens,
LSTM decoder from its final state over the rest) and `linear_attention` (kernelised
linear attention with an optional non-causal prefix, JRT-RNN). Registered by ops.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import (
    BOOL,
    F32,
    INT,
    STR,
    AttrSpec,
    Cost,
    OpDef,
    ShapeError,
    elems,
    float_seq,
)
from archc.ir.types import Attrs, ParamSpec, Type

# -- seq2seq ----------------------------------------------------------------------------


def _seq2seq_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "seq2seq")
    for key in ("source", "hidden", "layers"):
        if attrs[key] <= 0:
            raise ShapeError(f"seq2seq {key} must be positive, got {attrs[key]}")
    return (t.with_feature(attrs["hidden"]),)


def _seq2seq_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    """Two nn.LSTM parameter sets, named as the state_dict keys of modules/prefix.py's
    Seq2SeqLSTM (`enc.weight_ih_l0`, ..., `dec.bias_hh_l1`)."""
    h, d = attrs["hidden"], elems(ins[0])
    init = f"uniform({1.0 / math.sqrt(h)!r})"
    ps = []
    for side in ("enc", "dec"):
        for layer in range(attrs["layers"]):
            d_in = d if layer == 0 else h
            ps += [
                ParamSpec(f"{side}.weight_ih_l{layer}", (4 * h, d_in), init),
                ParamSpec(f"{side}.weight_hh_l{layer}", (4 * h, h), init),
            ]
            if attrs["bias"]:
                ps += [
                    ParamSpec(f"{side}.bias_ih_l{layer}", (4 * h,), init, decay=False),
                    ParamSpec(f"{side}.bias_hh_l{layer}", (4 * h,), init, decay=False),
                ]
    return tuple(ps)


def _seq2seq_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    """Each token runs one LSTM stack (encoder or decoder): per layer 2 * 4h (d_in + h)
    products and ~ 4h sigmoid/tanh gates plus the cell update (about 10 h elementwise)."""
    h, d, n = attrs["hidden"], elems(ins[0]), attrs["layers"]
    flops = sum(2.0 * 4 * h * ((d if i == 0 else h) + h) for i in range(n))
    return Cost(
        flops=flops,
        ew_flops=10.0 * h * n,
        act_bytes=6 * h * n * F32,
        state_bytes=2 * h * n * F32,
    )


SEQ2SEQ_OP = OpDef(
    "seq2seq",
    (1, 1),
    {
        "source": AttrSpec(INT),
        "hidden": AttrSpec(INT),
        "layers": AttrSpec(INT, 1),
        "bias": AttrSpec(BOOL, True),
    },
    _seq2seq_shape,
    _seq2seq_params,
    _seq2seq_cost,
    doc="LSTM encoder-decoder over one stream: an encoder LSTM reads positions < source; "
    "a decoder LSTM (own weights) continues from its final (h, c) over the rest",
)

# -- linear attention ---------------------------------------------------------------------


def feature_width(kind: str, f: int) -> int:
    """Width of phi(x) for a query/key of width f: elu keeps f; taylor is 1 + f + f^2."""
    return f if kind == "elu" else 1 + f + f * f


def _linear_attention_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    q, k, v = (float_seq(t, "linear_attention") for t in ins[:3])
    h = attrs["heads"]
    if h <= 0 or q.feature % h or v.feature % h:
        raise ShapeError(
            f"linear_attention heads={h} must divide the query width {q.feature} "
            f"and the value width {v.feature}"
        )
    if k.feature != q.feature:
        raise ShapeError(f"keys of width {k.feature} do not match queries of width {q.feature}")
    if attrs["prefix"] > 0:
        if len(ins) != 4:
            raise ShapeError("linear_attention with a prefix takes (q, k, v, prefix keys)")
        ke = float_seq(ins[3], "linear_attention")
        if ke.feature != q.feature:
            raise ShapeError(f"prefix keys of width {ke.feature} do not match the queries")
    elif len(ins) != 3:
        raise ShapeError("linear_attention without a prefix takes (q, k, v)")
    if attrs["chunk"] <= 0:
        raise ShapeError(f"linear_attention chunk must be positive, got {attrs['chunk']}")
    return (v,)


def _linear_attention_cost(
    attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int
) -> Cost:
    """As modules/prefix.py runs it, per token and head (phi width F, value width dv,
    chunk c = min(chunk, T)): the intra-chunk scores and mix (2 c F + 2 c dv), the read
    of the carried state (2 F dv + 2 F) and its update (2 F dv); the prefix's state
    write, 2 F dv over its min(P, T) tokens. Backward is twice that, less what has no
    gradient: the last chunk's state update (nothing reads it) and, without a prefix,
    the first chunk's read of the zero initial state (only the query's gradient)."""
    h = attrs["heads"]
    f = elems(ins[0]) // h
    big_f = feature_width(attrs["feature_map"], f)
    dv = elems(ins[2]) // h
    c = min(attrs["chunk"], T)
    last = T - (-(-T // c) - 1) * c  # tokens in the last chunk
    read, update = 2.0 * big_f * dv + 2.0 * big_f, 2.0 * big_f * dv
    prefix = 2.0 * big_f * dv * min(attrs["prefix"], T) / T
    fwd = 2.0 * c * big_f + 2.0 * c * dv + read + update + prefix
    bwd = 2.0 * fwd - 2.0 * update * last / T
    if attrs["prefix"] == 0:
        bwd -= read * c / T
    return Cost(
        flops=h * fwd,
        bwd_flops=h * bwd,
        ew_flops=h * (3.0 * big_f + 2.0 * dv),
        act_bytes=h * (2 * big_f + dv) * F32,
        state_bytes=h * big_f * (dv + 1) * F32,
    )


LINEAR_ATTENTION_OP = OpDef(
    "linear_attention",
    (3, 4),
    {
        "heads": AttrSpec(INT),
        "feature_map": AttrSpec(STR, "elu", ("elu", "taylor")),
        "prefix": AttrSpec(INT, 0),
        "chunk": AttrSpec(INT, 64),
    },
    _linear_attention_shape,
    cost=_linear_attention_cost,
    doc="normalised linear attention phi(q) S / phi(q) z over (q, k, v): causal, plus "
    "with prefix P > 0 a non-causal state of the first P tokens' (prefix keys, values) "
    "read by every position (JRT-RNN)",
)

PREFIX_OPS = (SEQ2SEQ_OP, LINEAR_ATTENTION_OP)
