"""The `select` family of ops: top-k block retrieval feeding block-sparse attention
(landmark / HiP / DHSA-style), layer-path programs over a pool of layers (CoLa), and
nested width/depth MLP stacks (SortedNet). Registered by ops.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from archc.ir.opdef import (
    F32,
    INT,
    NONE,
    NUM,
    STR,
    AttrSpec,
    Cost,
    OpDef,
    ShapeError,
    attention_qkv,
    elems,
    float_seq,
    same_type,
)
from archc.ir.types import Attrs, ParamSpec, Type

# -- block-sparse attention ------------------------------------------------------------


def _block_attention_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    q = attention_qkv(attrs, ins, "sparse attention")
    for key in ("block", "topk"):
        if attrs[key] <= 0:
            raise ShapeError(f"sparse attention {key} must be positive, got {attrs[key]}")
    return (q,)


def _block_attention_cost(
    attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int
) -> Cost:
    d, b = elems(ins[0]), attrs["block"]
    # Each query reads at most topk blocks + its own block + the window, and scores the
    # summaries of the complete blocks before it (T / (2 b) on average).
    ctx = min((T + 1) / 2, (attrs["topk"] + 1) * b + (attrs["window"] or 0))
    return Cost(
        flops=4.0 * d * ctx + 2.0 * d * T / (2 * b),
        act_bytes=3 * d * F32,
        kv_bytes=2 * elems(ins[1]) * F32,
    )


BLOCK_ATTENTION_OP = OpDef(
    "block_attention",
    (3, 3),
    {
        "heads": AttrSpec(INT),
        "kv_heads": AttrSpec(INT),
        "block": AttrSpec(INT),
        "topk": AttrSpec(INT),
        "window": AttrSpec(INT + NONE, None),
    },
    _block_attention_shape,
    cost=_block_attention_cost,
    doc=(
        "causal attention of each query over the tokens of the top-k complete past blocks "
        "(scored by mean-key summaries), its own block, and an optional sliding window"
    ),
)

# -- layer-path programs -----------------------------------------------------------------

SELECT_OP = OpDef(
    "select",
    (1, 1),
    {
        "programs": AttrSpec((tuple,)),
        "sample": AttrSpec(STR, "fixed", ("fixed", "random")),
    },
    same_type,
    regions=True,
    doc=(
        "apply regions in the order of a program (region indices; repeats share weights); "
        "with several programs each sample runs its own (chosen at run time, or drawn per "
        "sample in training when sample=random)"
    ),
)

# -- nested width/depth MLP stack ---------------------------------------------------------

NESTED_ACTS = ("gelu", "relu", "silu", "tanh")


def _nested_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "nested")
    h, n = attrs["hidden"], attrs["layers"]
    for w in attrs["widths"]:
        if not 0 < w <= 1:
            raise ShapeError(f"width fractions must lie in (0, 1], got {w}")
        if round(w * h) < 1:
            raise ShapeError(f"width fraction {w} of {h} hidden units keeps no unit")
    for dep in attrs["depths"]:
        if not 1 <= dep <= n:
            raise ShapeError(f"depth {dep} is not between 1 and the stack's {n} layers")
    return (t,)


def _nested_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d, h, n = elems(ins[0]), attrs["hidden"], attrs["layers"]
    return (
        ParamSpec("norm_weight", (n, d), "ones", decay=False),
        ParamSpec("w_up", (n, h, d), f"uniform({d**-0.5!r})"),
        ParamSpec("b_up", (n, h), "zeros", decay=False),
        ParamSpec("w_down", (n, d, h), f"uniform({h**-0.5!r})"),
        ParamSpec("b_down", (n, d), "zeros", decay=False),
    )


NESTED_OP = OpDef(
    "nested",
    (1, 1),
    {
        "layers": AttrSpec(INT),
        "hidden": AttrSpec(INT),
        "act": AttrSpec(STR, "gelu", NESTED_ACTS),
        "widths": AttrSpec((tuple,)),
        "depths": AttrSpec((tuple,)),
        "eval_width": AttrSpec(NUM, 1.0),
        "eval_depth": AttrSpec(INT + NONE, None),
    },
    _nested_shape,
    _nested_params,
    cost=lambda a, i, o, T: Cost(
        flops=4.0 * elems(i[0]) * a["hidden"] * a["layers"],
        act_bytes=(2 * elems(i[0]) + a["hidden"]) * F32 * a["layers"],
    ),
    doc=(
        "SortedNet stack of residual RMS-norm MLPs; runs a width prefix of the hidden "
        "units and a depth prefix of the layers, sampled per training step"
    ),
)

SELECT_OPS = (BLOCK_ATTENTION_OP, SELECT_OP, NESTED_OP)
