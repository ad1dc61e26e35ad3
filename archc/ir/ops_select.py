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
    if (attrs["fanout"] is None) != (attrs["super_topk"] is None):
        raise ShapeError("sparse attention fanout and super_topk go together (two levels)")
    if attrs["fanout"] is not None and (attrs["fanout"] < 2 or attrs["super_topk"] <= 0):
        raise ShapeError("sparse attention needs fanout >= 2 and super_topk >= 1")
    return (q,)


def _block_attention_cost(
    attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int
) -> Cost:
    """As modules/sparse_attention.py runs it: every query scores the summaries of all
    ceil(T / b) blocks (a product, no gradient); a query reads at most L = (topk + 1) b
    + window keys; while T <= min(16 L, 2048) the selection becomes a mask for dense
    SDPA (products over all T keys), beyond that only the L gathered keys are touched,
    by elementwise products and sums (elementwise work)."""
    d, b, heads = elems(ins[0]), attrs["block"], attrs["heads"]
    blocks = -(-T // b)
    kk = min(attrs["topk"], blocks - 1)
    width = (max(kk, 0) + 1) * b + (attrs["window"] or 0)
    scores = 2.0 * d * blocks if kk > 0 else 0.0
    if attrs["fanout"] is not None and kk > 0:  # super-block scores too
        scores += 2.0 * d * -(-blocks // attrs["fanout"])
    if T <= min(16 * width, 2048):  # masked dense SDPA
        attn, ew = 4.0 * d * T, 6.0 * heads * T
    else:  # gathered keys, elementwise products
        attn, ew = 0.0, 4.0 * d * width + 6.0 * heads * width
    return Cost(
        flops=attn + scores,
        ew_flops=ew,
        bwd_flops=2.0 * attn,
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
        # Two-level (hierarchical) selection: blocks per super-block, super-blocks kept.
        "fanout": AttrSpec(INT + NONE, None),
        "super_topk": AttrSpec(INT + NONE, None),
    },
    _block_attention_shape,
    cost=_block_attention_cost,
    doc=(
        "causal attention of each query over the tokens of the top-k complete past blocks "
        "(scored by mean-key summaries), its own block, and an optional sliding window; "
        "with fanout/super_topk the blocks are first narrowed to those inside the "
        "super_topk best complete super-blocks of fanout blocks (and the own super-block)"
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

# -- depth up-scaling (SOLAR) -------------------------------------------------------------


def upscale_programs(base: int, drop: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(region order before, after) the up-scale of a `base`-layer stack dropping `drop`:
    2 (base - drop) regions, copy A = regions 0..base-drop-1 (base layers 0..base-drop-1),
    copy B = the rest (base layers drop..base-1). Before: copy A then the last `drop`
    blocks of copy B (base layers base-drop..base-1), i.e. the base model; after: all."""
    half = base - drop
    before = (*range(half), *range(half + base - 2 * drop, 2 * half))
    return before, tuple(range(2 * half))


def _upscale_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    base, drop = attrs["base"], attrs["drop"]
    if not 0 < 2 * drop < base:
        raise ShapeError(f"upscale needs 0 < 2 * drop < n, got drop={drop}, n={base}")
    if attrs["at_step"] < 0:
        raise ShapeError(f"upscale at_step must be >= 0, got {attrs['at_step']}")
    return same_type(attrs, ins)


UPSCALE_OP = OpDef(
    "upscale",
    (1, 1),
    {"base": AttrSpec(INT), "drop": AttrSpec(INT), "at_step": AttrSpec(INT)},
    _upscale_shape,
    regions=True,
    doc=(
        "depth up-scaling (SOLAR): 2 (base - drop) regions; until training step at_step "
        "only the base path runs (copy A, then copy B's last drop blocks); then copy A's "
        "blocks drop..base-drop-1 are copied into copy B's first base-2drop blocks and "
        "all regions run"
    ),
)

SELECT_OPS = (BLOCK_ATTENTION_OP, SELECT_OP, NESTED_OP, UPSCALE_OP)
