"""The `segment` op: segment recurrence (Recurrent Memory Transformer, HMT,
Transformer-XL). The sequence is cut into segments of `length` tokens; its one region
(the body) runs on each segment in turn, and a carry links consecutive segments:

- `memory`: `mem` learned memory tokens are prepended to each segment (read) and
  appended (write); the body's outputs at the write slots are the next segment's
  memory (RMT). With `recall` = N > 0, a FIFO of the last N written memories is read by
  cross-attention from a summary of the previous segment and added to the read memory
  (HMT memory recall). With `sensory` = j > 0, the last j tokens of the previous
  segment's input are also read, between the memory and the segment (HMT's sensory
  memory); their outputs are dropped.
- `kv_window`: attention inside the body also sees the keys/values of the last
  `window` tokens before the segment (Transformer-XL style cache).
- `fast_weights`: a `heads`-head delta-rule matrix memory (DeltaNet's update) is written
  token by token from the body's outputs at the end of each segment; the next
  segment's inputs read it (x + W_o q S) before the body runs.

`bptt` bounds backpropagation through time: the carry is detached every bptt + 1
segments, so a segment's gradient crosses at most `bptt` transitions (None: never).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import F32, INT, NONE, STR, AttrSpec, Cost, OpDef, ShapeError, float_seq
from archc.ir.types import Attrs, ParamSpec, Type

SEGMENT_CARRIES = ("memory", "kv_window", "fast_weights")


def _segment_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "segment")
    if attrs["carry"] == "memory" and attrs["mem"] <= 0:
        raise ShapeError("a memory-token carry needs at least one memory token")
    if attrs["carry"] == "kv_window" and (attrs["window"] or 0) <= 0:
        raise ShapeError("a kv-window carry needs a window of at least one token")
    if attrs["carry"] == "fast_weights" and (attrs["heads"] <= 0 or t.feature % attrs["heads"]):
        raise ShapeError(f"fast-weights heads={attrs['heads']} must divide the width {t.feature}")
    if attrs["recall"] and attrs["carry"] != "memory":
        raise ShapeError("memory recall needs a memory-token carry")
    if attrs["sensory"] and attrs["carry"] != "memory":
        raise ShapeError("sensory memory reads with the memory tokens: it needs a memory carry")
    return (t,)


def _segment_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = float_seq(ins[0], "segment").feature
    u_in = f"uniform({1.0 / math.sqrt(d)!r})"
    if attrs["carry"] == "fast_weights":  # a DeltaNet cell's parameters, under `fast`
        h = attrs["heads"]
        return (
            ParamSpec("fast.weight_q", (d, d), u_in),
            ParamSpec("fast.weight_k", (d, d), u_in),
            ParamSpec("fast.weight_v", (d, d), u_in),
            ParamSpec("fast.weight_beta", (h, d), u_in),
            ParamSpec("fast.bias_beta", (h,), "zeros", decay=False),
            ParamSpec("fast.weight_o", (d, d), u_in),
        )
    if attrs["carry"] != "memory":
        return ()
    # Memory tokens start like embeddings (RMT initialises them from the embedding scale).
    ps = [ParamSpec("memory", (attrs["mem"], d), "normal(0.02)", decay=False)]
    if attrs["recall"]:
        ps += [ParamSpec("recall_q", (d, d), u_in), ParamSpec("recall_k", (d, d), u_in)]
    return tuple(ps)


def _recall_flops(attrs: Attrs, d: int, seq_len: int) -> float:
    """HMT recall per token: each segment after the first maps the previous segment's
    summary (D x D), the m memory tokens in its FIFO (D x D each; the FIFO fills up over
    the first `recall` segments), scores them and mixes them (2 D m each)."""
    k, n, fifo = min(seq_len, attrs["length"]), attrs["mem"], attrs["recall"]
    if not fifo:
        return 0.0
    segments = max(1, seq_len // k)
    total = 0.0
    for s in range(1, segments):
        m = min(s, fifo) * n
        total += 2.0 * d * d * (1 + m) + 4.0 * d * m
    return total / (segments * k)


def _segment_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    d = float_seq(ins[0], "segment").feature
    if attrs["carry"] == "memory":
        # The memory carried between segments, plus the recall FIFO.
        return Cost(
            flops=_recall_flops(attrs, d, T),
            state_bytes=attrs["mem"] * d * F32 * (1 + attrs["recall"]),
        )
    if attrs["carry"] == "fast_weights":  # per head a (D/h, D/h) matrix
        return Cost(state_bytes=d * d // attrs["heads"] * F32)
    return Cost()


SEGMENT_OP = OpDef(
    "segment",
    (1, 1),
    {
        "length": AttrSpec(INT),
        "carry": AttrSpec(STR, "memory", SEGMENT_CARRIES),
        "mem": AttrSpec(INT, 0),
        "window": AttrSpec(INT + NONE, None),
        "bptt": AttrSpec(INT + NONE, None),
        "recall": AttrSpec(INT, 0),
        "heads": AttrSpec(INT, 0),
        "sensory": AttrSpec(INT, 0),
    },
    _segment_shape,
    _segment_params,
    _segment_cost,
    regions=True,
    doc="run the body region on segments of `length` tokens, carrying `mem` memory "
    "tokens (with a recall FIFO of `recall` memories), a KV window of `window` "
    "tokens or a `heads`-head fast-weight matrix between them; gradients cross at "
    "most `bptt` segment transitions",
)


def segment_body_len(attrs: Attrs, seq_len: int) -> int:
    """The sequence length one run of the body sees: a segment plus its memory slots
    and sensory tokens."""
    return min(seq_len, attrs["length"]) + 2 * attrs["mem"] + attrs["sensory"]


def segment_cost(attrs: Attrs, own: Cost, body: Cost, seq_len: int) -> Cost:
    """Per-token cost of a segment op from its body's cost at `segment_body_len` and its
    own (`own`: recall): the body runs on length + 2 mem + sensory positions per `length`
    tokens,
    and its KV cache never grows with T (kv_window keeps `window` tokens of it as
    carried state)."""
    k = min(seq_len, attrs["length"])
    scale = (k + 2 * attrs["mem"] + attrs["sensory"]) / k
    window = attrs["window"] or 0
    return Cost(
        flops=scale * body.flops + own.flops,
        ew_flops=scale * body.ew_flops + own.ew_flops,
        bwd_flops=scale * (2.0 * body.flops if body.bwd_flops is None else body.bwd_flops)
        + 2.0 * own.flops,
        act_bytes=scale * body.act_bytes,
        state_bytes=own.state_bytes + body.state_bytes + body.kv_bytes * window,
        kv_bytes=0,
    )
