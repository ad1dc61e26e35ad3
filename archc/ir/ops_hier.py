"""The `hier` control op: a multi-timescale hierarchy (registered by ops.py).

hier(x[, tokens]) -> x + up(inner(down(x))). Its one region, the inner network, runs
on the coarse sequence (B, T', D): T' = ceil(T / stride) for a fixed stride, else the
number of chunks (data-dependent: a ragged sequence, run padded with per-row lengths).

- down: "stride" (groups of `stride` tokens pooled by mean or last), "router" (H-Net
  dynamic chunking: boundary p_t = (1 - cos(q_t, k_{t-1})) / 2, a chunk starts where
  p_t >= 1/2; a ratio auxiliary loss of weight `weight` pulls the compression towards
  `target`), "split" (HAT: a chunk starts at each byte after a space, id 32; needs the
  token ids as the second input).
- up: "repeat" (each fine position takes its coarse step), "linear" (stride only: a
  linear map D -> stride * D gives each position of a group its own vector), "ema"
  (router only: H-Net's dechunk smoothing with straight-through confidence),
  "cross-attn" (each fine position attends, with `heads` heads, over the coarse steps
  it may read: those complete at or before it when causal, all of them if not).
- dim: the inner network's width, if not the input's: linear maps D -> dim before it
  and dim -> D after it.
- causal: a stride group's coarse step is read from the position where the group
  completes on (the up-sampled sequence is delayed by stride - 1); chunks are
  represented by their first token, so a position reads the chunk it belongs to,
  which started at or before it. causal=false (encoders): a group reads its own
  coarse step.
"""

from __future__ import annotations

from collections.abc import Sequence

from archc.ir.opdef import (
    BOOL,
    F32,
    INT,
    NONE,
    NUM,
    STR,
    AttrSpec,
    Cost,
    OpDef,
    ShapeError,
    float_seq,
    tensor_of,
)
from archc.ir.types import Attrs, ParamSpec, TensorType, Type

DOWN_KINDS = ("stride", "router", "split")
UP_KINDS = ("repeat", "linear", "ema", "cross-attn")


def coarse_time(t: TensorType, attrs: Attrs) -> str:
    """The symbolic time dim of the coarse sequence: T/4 (stride 4) or T/r (ragged)."""
    time = str(t.dims[1])
    if attrs["down"] == "stride":
        base, _, div = time.partition("/")
        if div.isdigit():  # T/4 then stride 4 -> T/16, not T/4/4
            return f"{base}/{int(div) * attrs['stride']}"
        return f"{time}/{attrs['stride']}"
    return f"{time}/r"


def region_type(attrs: Attrs, ins: Sequence[Type]) -> TensorType:
    """The type of the region's input and output: the coarse sequence (B, T', D)."""
    t = float_seq(ins[0], "hier")
    return TensorType((t.dims[0], coarse_time(t, attrs), attrs["dim"] or t.feature), "f32")


def region_rate(attrs: Attrs) -> float:
    """The fraction of the fine tokens the region runs on (the cost model's scale):
    1 / stride, or 1 / target for the router (what its ratio loss aims at), or about
    1 / 6 for words of English text (HAT: a word and its space)."""
    if attrs["down"] == "stride":
        return 1.0 / attrs["stride"]
    if attrs["down"] == "router":
        return 1.0 / attrs["target"]
    return 1.0 / 6.0


def _shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "hier")
    if attrs["down"] == "stride" and not attrs["stride"]:
        raise ShapeError("hier down=stride needs stride >= 1")
    if attrs["up"] == "linear" and attrs["down"] != "stride":
        raise ShapeError("hier up=linear needs a fixed stride (down: {stride: k})")
    if attrs["up"] == "ema" and attrs["down"] != "router":
        raise ShapeError("hier up=ema needs the router (down: router)")
    if attrs["up"] == "cross-attn" and t.feature % attrs["heads"]:
        raise ShapeError(f"hier cross-attn heads={attrs['heads']} do not divide {t.feature}")
    if attrs["down"] == "split":
        if len(ins) != 2:
            raise ShapeError("hier down=split needs the token ids as its second input")
        tok = tensor_of(ins[1], "hier tokens")
        if tok.dtype != "i64":
            raise ShapeError(f"hier down=split needs token ids (B, T), got {tok}")
    elif len(ins) != 1:
        raise ShapeError("hier takes one input unless down=split")
    return (t,)


def _params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = tensor_of(ins[0], "hier").feature
    out: list[ParamSpec] = []
    if attrs["down"] == "router":
        # q = x (I + Wq), k = x (I + Wk): zero deltas start from H-Net's identity init.
        out += [ParamSpec("q", (d, d), "zeros"), ParamSpec("k", (d, d), "zeros")]
    if attrs["up"] == "linear":
        out.append(ParamSpec("up", (attrs["stride"] * d, d), f"normal({d**-0.5!r})"))
    if attrs["up"] == "cross-attn":
        std = f"normal({d**-0.5!r})"
        out += [ParamSpec(f"up_{n}", (d, d), std) for n in ("q", "k", "v", "o")]
    if attrs["dim"] is not None:  # the inner network's own width (H-Net widens stages)
        inner = attrs["dim"]
        out.append(ParamSpec("proj_in", (inner, d), f"normal({d**-0.5!r})"))
        out.append(ParamSpec("proj_out", (d, inner), f"normal({inner**-0.5!r})"))
    return tuple(out)


def _cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    """Per fine token, on top of the inner network's: with r = region_rate, the
    router's q/k maps (2 D^2 each); the inner width's maps in and out (2 D dim each per
    coarse step); up-sampling: linear (a D -> kD map per coarse step, 2 D^2 per fine
    token), cross-attn (q and o per fine token, k and v per coarse step, dense scores
    and values over the r T coarse steps), ema (the (L, L) smoothing matrix times the
    (L, D) chunks, L = r T). Pooling, the cosine, gathers and the residual add are
    elementwise."""
    d = tensor_of(ins[0], "hier").feature
    r = region_rate(attrs)
    n = r * seq_len  # coarse steps
    flops, ew = 0.0, 4.0 * d  # pooling, up-sampling and the residual add
    if attrs["down"] == "router":
        flops += 4.0 * d * d
        ew += 6.0 * d
    if attrs["dim"] is not None:
        flops += r * 4.0 * d * attrs["dim"]
    if attrs["up"] == "cross-attn":
        flops += 4.0 * d * d + r * 4.0 * d * d + 4.0 * d * n
        ew += 6.0 * attrs["heads"] * n
    if attrs["up"] == "linear":
        flops += 2.0 * d * d
    if attrs["up"] == "ema":
        flops += r * 2.0 * n * d
        ew += 4.0 * r * n
    return Cost(flops=flops, ew_flops=ew, act_bytes=3.0 * d * F32)


HIER_OP = OpDef(
    "hier",
    (1, 2),
    {
        "down": AttrSpec(STR, choices=DOWN_KINDS),
        "stride": AttrSpec(INT + NONE, None),
        "pool": AttrSpec(STR, "mean", ("mean", "last")),
        "target": AttrSpec(NUM, 4.0),
        "weight": AttrSpec(NUM, 0.03),
        "up": AttrSpec(STR, "repeat", UP_KINDS),
        "causal": AttrSpec(BOOL, True),
        "dim": AttrSpec(INT + NONE, None),
        "heads": AttrSpec(INT, 4),
    },
    _shape,
    params=_params,
    cost=_cost,
    regions=True,
    doc="x + up(inner(down(x))): the region runs on the coarse sequence (B, T', D)",
    extra={"region_type": region_type, "region_rate": region_rate},
)
