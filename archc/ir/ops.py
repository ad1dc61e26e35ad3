"""The op table: the single source of truth for every IR op.

For each op: arity, attribute schema, shape rule, parameter shapes and initializers,
and cost rule (the machinery is in opdef.py; the recurrent `scan` op in ops_scan.py).
Shape inference, the verifier, the cost model and the backends all
read this table; nothing else knows an op's rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import (  # noqa: F401  (re-exported: the op table's public names)
    BOOL,
    F32,
    INT,
    NONE,
    NUM,
    OPS,
    REQUIRED,
    STR,
    AttrSpec,
    Cost,
    CostRule,
    OpDef,
    ParamRule,
    ShapeError,
    ShapeRule,
    attention_qkv,
    elems,
    float_seq,
    get_op,
    register_op,
    same_type,
    tensor_of,
)
from archc.ir.ops_hier import HIER_OP
from archc.ir.ops_loop import HALT_OP, LOOP_OP
from archc.ir.ops_memory import MAC_OP, MEMORY_OP
from archc.ir.ops_scan import (  # noqa: F401  (re-exported)
    CELL_GATES,
    LINEAR_CELLS,
    MATRIX_CELLS,
    NEW_CELLS,
    NEWTON_CELLS,
    NEWTON_ITERS,
    NEWTON_TOL,
    SCAN_MODES,
    SCAN_OP,
    SSM_CELLS,
    matrix_dims,
    scan_modes,
)
from archc.ir.ops_segment import SEGMENT_OP
from archc.ir.ops_select import SELECT_OPS
from archc.ir.types import Attrs, ParamSpec, TensorType, Type

# -- input / embedding ------------------------------------------------------------------


def _input_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    if attrs["kind"] == "tokens":
        return (TensorType(("B", "T"), "i64"),)
    return (TensorType(("B", "T", attrs["dim"]), "f32"),)


register_op(
    OpDef(
        "input",
        (0, 0),
        {"kind": AttrSpec(STR, choices=("tokens", "features")), "dim": AttrSpec(INT + NONE, None)},
        _input_shape,
        doc="the graph's (or a region's) input",
    )
)


def _embed_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = tensor_of(ins[0], "embed")
    if t.dtype != "i64":
        raise ShapeError(f"embed expects token ids (B, T), got {t}; put embed first")
    return (TensorType((*t.dims, attrs["dim"]), "f32"),)


register_op(
    OpDef(
        "embed",
        (1, 1),
        {"vocab": AttrSpec(INT), "dim": AttrSpec(INT)},
        _embed_shape,
        params=lambda a, i: (
            ParamSpec("weight", (a["vocab"], a["dim"]), "normal(0.02)", decay=False),
        ),
        cost=lambda a, i, o, T: Cost(act_bytes=a["dim"] * F32),
        doc="token embedding lookup",
    )
)

# -- linear / elementwise ----------------------------------------------------------------


def _linear_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    return (float_seq(ins[0], "linear").with_feature(attrs["out"]),)


def _linear_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d_in = elems(ins[0])
    bound = f"uniform({1.0 / math.sqrt(d_in)!r})"
    out: list[ParamSpec] = []
    if attrs["weight_from"] is None:
        out.append(ParamSpec("weight", (attrs["out"], d_in), bound))
    if attrs["bias"]:
        out.append(ParamSpec("bias", (attrs["out"],), "zeros", decay=False))
    return tuple(out)


register_op(
    OpDef(
        "linear",
        (1, 1),
        {
            "out": AttrSpec(INT),
            "bias": AttrSpec(BOOL, True),
            "weight_from": AttrSpec(STR + NONE, None),
        },
        _linear_shape,
        _linear_params,
        cost=lambda a, i, o, T: Cost(
            flops=2.0 * elems(i[0]) * a["out"], act_bytes=elems(i[0]) * F32
        ),
        doc="y = x W^T + b; weight_from names an embed whose weight is reused (tying)",
    )
)


def _norm_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = elems(ins[0])
    if not attrs["affine"]:
        return ()
    ps = [ParamSpec("weight", (d,), "ones", decay=False)]
    if attrs["kind"] == "layer":
        ps.append(ParamSpec("bias", (d,), "zeros", decay=False))
    return tuple(ps)


register_op(
    OpDef(
        "norm",
        (1, 1),
        {
            "kind": AttrSpec(STR, choices=("rms", "layer")),
            "eps": AttrSpec(NUM, 1e-5),
            "affine": AttrSpec(BOOL, True),
        },
        lambda a, i: (float_seq(i[0], "norm"),),
        _norm_params,
        cost=lambda a, i, o, T: Cost(ew_flops=5.0 * elems(i[0]), act_bytes=elems(i[0]) * F32),
        doc="RMS or layer normalisation over the feature dim",
    )
)

POINTWISE_FNS = ("gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid", "identity")
register_op(
    OpDef(
        "pointwise",
        (1, 1),
        {"fn": AttrSpec(STR, choices=POINTWISE_FNS)},
        same_type,
        cost=lambda a, i, o, T: Cost(ew_flops=8.0 * elems(i[0]), act_bytes=elems(i[0]) * F32),
        elementwise=True,
        doc="elementwise activation",
    )
)


def _binary_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    a, b = tensor_of(ins[0], attrs["fn"]), tensor_of(ins[1], attrs["fn"])
    if a != b:
        raise ShapeError(f"{attrs['fn']} of mismatched shapes {a} and {b}")
    return (a,)


register_op(
    OpDef(
        "binary",
        (2, 2),
        {"fn": AttrSpec(STR, choices=("add", "mul", "sub"))},
        _binary_shape,
        cost=lambda a, i, o, T: Cost(
            ew_flops=float(elems(i[0])),
            act_bytes=(elems(i[0]) * F32 if a["fn"] == "mul" else 0),
        ),
        elementwise=True,
        doc="elementwise add / mul / sub of equal shapes",
    )
)


def _split_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "split")
    sizes = attrs["sizes"]
    if sum(sizes) != t.feature:
        raise ShapeError(f"split sizes {sizes} do not add up to {t.feature}")
    return tuple(t.with_feature(s) for s in sizes)


register_op(
    OpDef(
        "split",
        (1, 1),
        {"sizes": AttrSpec((tuple,))},
        _split_shape,
        doc="split the feature dim into parts",
    )
)
register_op(
    OpDef(
        "dropout",
        (1, 1),
        {"p": AttrSpec(NUM)},
        same_type,
        cost=lambda a, i, o, T: Cost(act_bytes=elems(i[0]) if a["p"] > 0 else 0),
        elementwise=True,
        doc="dropout in training, identity in eval",
    )
)

# -- convolution / positions ---------------------------------------------------------------


def _conv_groups(attrs: Attrs, d_in: int) -> int:
    return d_in if attrs["groups"] == 0 else attrs["groups"]


def _conv_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "conv1d")
    g = _conv_groups(attrs, t.feature)
    if t.feature % g or attrs["out"] % g:
        raise ShapeError(
            f"conv1d groups={g} must divide input width {t.feature} and output width {attrs['out']}"
        )
    return (t.with_feature(attrs["out"]),)


def _conv_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d_in = elems(ins[0])
    g = _conv_groups(attrs, d_in)
    fan_in = d_in // g * attrs["kernel"]
    bound = f"uniform({1.0 / math.sqrt(fan_in)!r})"
    ps = [ParamSpec("weight", (attrs["out"], d_in // g, attrs["kernel"]), bound)]
    if attrs["bias"]:
        ps.append(ParamSpec("bias", (attrs["out"],), bound, decay=False))
    return tuple(ps)


register_op(
    OpDef(
        "conv1d",
        (1, 1),
        {
            "out": AttrSpec(INT),
            "kernel": AttrSpec(INT),
            "dilation": AttrSpec(INT, 1),
            "groups": AttrSpec(INT, 1),
            "causal": AttrSpec(BOOL, True),
            "bias": AttrSpec(BOOL, True),
        },
        _conv_shape,
        _conv_params,
        cost=lambda a, i, o, T: Cost(
            flops=2.0 * a["kernel"] * (elems(i[0]) // _conv_groups(a, elems(i[0]))) * a["out"],
            act_bytes=elems(i[0]) * F32,
        ),
        doc="1-d convolution over time; groups=0 means depthwise",
    )
)


def _posenc_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "posenc")
    if attrs["kind"] == "rope":
        heads = attrs["heads"]
        if t.feature % heads or (t.feature // heads) % 2:
            raise ShapeError(f"rope needs an even head width: {t.feature} over {heads} heads")
    elif attrs["kind"] == "sinusoidal" and t.feature % 2:
        raise ShapeError(f"sinusoidal positions need an even width, got {t.feature}")
    return (t,)


register_op(
    OpDef(
        "posenc",
        (1, 1),
        {
            "kind": AttrSpec(STR, choices=("learned", "sinusoidal", "rope")),
            "max_len": AttrSpec(INT, 2048),
            "heads": AttrSpec(INT, 1),
            "base": AttrSpec(NUM, 10000.0),
        },
        _posenc_shape,
        params=lambda a, i: (
            (ParamSpec("weight", (a["max_len"], elems(i[0])), "normal(0.02)", decay=False),)
            if a["kind"] == "learned"
            else ()
        ),
        cost=lambda a, i, o, T: Cost(
            ew_flops=float(elems(i[0])) * (3 if a["kind"] == "rope" else 1)
        ),
        doc="add learned/sinusoidal positions, or rotate heads (rope)",
    )
)

# -- attention --------------------------------------------------------------------------------


def _attention_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    if attrs.get("chunk") is not None and attrs["window"] is not None:
        raise ShapeError("attention takes a window or a chunk, not both")
    if attrs.get("chunk") is not None and attrs["chunk"] <= 0:
        raise ShapeError(f"attention chunk={attrs['chunk']} must be positive")
    return (attention_qkv(attrs, ins, "attention"),)


def _attention_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    """SDPA as the lowering runs it: dense scores q k^T and values p v over all T keys
    (2 T d each per token; a causal or window mask hides entries, it skips no work),
    grouped kv heads repeated up to the query heads; softmax and scaling elementwise.
    With `chunk` C the lowering runs SDPA on each chunk of c = min(C, T) tokens (T padded
    to a multiple of c), so a token's keys are c, not T; a step keeps at most C - 1
    earlier keys of its chunk, a constant-size cache."""
    d = elems(ins[0])
    keys = float(T)
    if attrs.get("chunk") is not None:
        c = min(attrs["chunk"], T)
        keys = c * (-(-T // c) * c) / T  # padded positions are computed too
    bounded = attrs["window"] is not None or attrs.get("chunk") is not None
    kv = 0 if bounded else 2 * elems(ins[1]) * F32
    state = 0
    if attrs["window"] is not None:
        state = 2 * elems(ins[1]) * F32 * attrs["window"]
    elif attrs.get("chunk") is not None:
        state = 2 * elems(ins[1]) * F32 * (attrs["chunk"] - 1)
    return Cost(
        flops=4.0 * d * keys,
        ew_flops=6.0 * attrs["heads"] * keys,  # scale, mask, max, exp, sum, divide per score
        act_bytes=3 * d * F32,
        kv_bytes=kv,
        state_bytes=state,
    )


register_op(
    OpDef(
        "attention",
        (3, 3),
        {
            "heads": AttrSpec(INT),
            "kv_heads": AttrSpec(INT),
            "mask": AttrSpec(STR, "causal", ("causal", "none")),
            "window": AttrSpec(INT + NONE, None),
            "chunk": AttrSpec(INT + NONE, None),
            "dropout": AttrSpec(NUM, 0.0),
        },
        _attention_shape,
        cost=_attention_cost,
        doc="scaled dot-product attention of q (B,T,H*hd), k, v (B,T,KV*hd)",
    )
)

# -- recurrences: archc/ir/ops_scan.py --------------------------------------------------
register_op(SCAN_OP)

# -- neural memory (Titans, ATLAS): archc/ir/ops_memory.py -------------------------------
register_op(MEMORY_OP)
register_op(MAC_OP)

# -- select (block-sparse attention, layer paths, nested stacks): ops_select.py ----------
for _op in SELECT_OPS:
    register_op(_op)

# -- control ---------------------------------------------------------------------------------------
# loop and halt: archc/ir/ops_loop.py
register_op(LOOP_OP)
register_op(HALT_OP)
register_op(SEGMENT_OP)  # segment recurrence: archc/ir/ops_segment.py
register_op(HIER_OP)  # multi-timescale hierarchy: archc/ir/ops_hier.py
# const / scale / reshape / rearrange (what the rewrite passes fold): ops_const.py
from archc.ir.ops_const import CONST_OPS  # noqa: E402

for _op in CONST_OPS:
    register_op(_op)

# fused elementwise chains (built by fuse-pointwise): ops_fused.py
from archc.ir.ops_fused import FUSED_POINTWISE_OP  # noqa: E402

register_op(FUSED_POINTWISE_OP)

# seq2seq and linear_attention (prefix-conditioned ops): ops_prefix.py
from archc.ir.ops_prefix import PREFIX_OPS  # noqa: E402

for _op in PREFIX_OPS:
    register_op(_op)
