"""The op table: the single source of truth for every IR op.

For each op: arity, attribute schema, shape rule, parameter shapes and initializers,
and cost rule. Shape inference, the verifier, the cost model and the backends all
read this table; nothing else knows an op's rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from archc.ir.types import Attrs, ParamSpec, StateType, TensorType, Type

REQUIRED = object()
F32 = 4  # bytes per float32 element


class ShapeError(ValueError):
    """An op's inputs or attributes do not fit; the message is for the spec's author."""


@dataclass(frozen=True)
class AttrSpec:
    types: tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Cost:
    """Per-token forward FLOPs and memory figures of one node at sequence length T."""

    flops: float = 0.0  # forward FLOPs per token
    act_bytes: float = 0.0  # activation bytes per token kept for backward
    state_bytes: int = 0  # recurrent state per sequence
    kv_bytes: int = 0  # KV-cache growth per token (0 if constant-size)


ShapeRule = Callable[[Attrs, Sequence[Type]], tuple[Type, ...]]
ParamRule = Callable[[Attrs, Sequence[Type]], tuple[ParamSpec, ...]]
CostRule = Callable[[Attrs, Sequence[Type], tuple[Type, ...], int], Cost]


def _no_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    return ()


def _no_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    return Cost()


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: tuple[int, int]
    attrs: dict[str, AttrSpec]
    shape: ShapeRule
    params: ParamRule = _no_params
    cost: CostRule = _no_cost
    regions: bool = False
    elementwise: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check_attrs(self, attrs: Attrs) -> list[str]:
        """Problems with `attrs` against the schema (empty if fine)."""
        problems = []
        for key in attrs:
            if key not in self.attrs:
                problems.append(f"unknown attribute '{key}'")
        for key, spec in self.attrs.items():
            if key not in attrs:
                if spec.default is REQUIRED:
                    problems.append(f"missing attribute '{key}'")
                continue
            value = attrs[key]
            if not isinstance(value, spec.types) or (
                isinstance(value, bool) and bool not in spec.types
            ):
                problems.append(f"attribute '{key}'={value!r} has the wrong type")
            elif spec.choices is not None and value not in spec.choices:
                problems.append(f"attribute '{key}'={value!r} not in {spec.choices}")
        return problems

    def with_defaults(self, attrs: dict[str, Any]) -> Attrs:
        full = {k: s.default for k, s in self.attrs.items() if s.default is not REQUIRED}
        full.update(attrs)
        return Attrs(full)


OPS: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} already registered")
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    return OPS[name]


# -- helpers ------------------------------------------------------------------------
def _tensor(t: Type, what: str) -> TensorType:
    if not isinstance(t, TensorType):
        raise ShapeError(f"{what} expects a tensor, got {t}")
    return t


def _float_seq(t: Type, what: str) -> TensorType:
    t = _tensor(t, what)
    if t.dtype != "f32" or len(t.dims) != 3:
        raise ShapeError(f"{what} expects a (B, T, D) float tensor, got {t}")
    return t


def _same(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    return (_tensor(ins[0], "op"),)


def _elems(t: Type) -> int:
    return _tensor(t, "op").feature


INT, NUM, BOOL, STR, NONE = (int,), (float, int), (bool,), (str,), (type(None),)

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
    t = _tensor(ins[0], "embed")
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
    return (_float_seq(ins[0], "linear").with_feature(attrs["out"]),)


def _linear_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d_in = _elems(ins[0])
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
            flops=2.0 * _elems(i[0]) * a["out"], act_bytes=_elems(i[0]) * F32
        ),
        doc="y = x W^T + b; weight_from names an embed whose weight is reused (tying)",
    )
)


def _norm_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = _elems(ins[0])
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
        lambda a, i: (_float_seq(i[0], "norm"),),
        _norm_params,
        cost=lambda a, i, o, T: Cost(flops=5.0 * _elems(i[0]), act_bytes=_elems(i[0]) * F32),
        doc="RMS or layer normalisation over the feature dim",
    )
)

POINTWISE_FNS = ("gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid", "identity")
register_op(
    OpDef(
        "pointwise",
        (1, 1),
        {"fn": AttrSpec(STR, choices=POINTWISE_FNS)},
        _same,
        cost=lambda a, i, o, T: Cost(flops=8.0 * _elems(i[0]), act_bytes=_elems(i[0]) * F32),
        elementwise=True,
        doc="elementwise activation",
    )
)


def _binary_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    a, b = _tensor(ins[0], attrs["fn"]), _tensor(ins[1], attrs["fn"])
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
            flops=float(_elems(i[0])), act_bytes=(_elems(i[0]) * F32 if a["fn"] == "mul" else 0)
        ),
        elementwise=True,
        doc="elementwise add / mul / sub of equal shapes",
    )
)


def _split_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float_seq(ins[0], "split")
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
        _same,
        cost=lambda a, i, o, T: Cost(act_bytes=_elems(i[0]) if a["p"] > 0 else 0),
        elementwise=True,
        doc="dropout in training, identity in eval",
    )
)

# -- convolution / positions ---------------------------------------------------------------


def _conv_groups(attrs: Attrs, d_in: int) -> int:
    return d_in if attrs["groups"] == 0 else attrs["groups"]


def _conv_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float_seq(ins[0], "conv1d")
    g = _conv_groups(attrs, t.feature)
    if t.feature % g or attrs["out"] % g:
        raise ShapeError(
            f"conv1d groups={g} must divide input width {t.feature} and output width {attrs['out']}"
        )
    return (t.with_feature(attrs["out"]),)


def _conv_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d_in = _elems(ins[0])
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
            flops=2.0 * a["kernel"] * (_elems(i[0]) // _conv_groups(a, _elems(i[0]))) * a["out"],
            act_bytes=_elems(i[0]) * F32,
        ),
        doc="1-d convolution over time; groups=0 means depthwise",
    )
)


def _posenc_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float_seq(ins[0], "posenc")
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
            (ParamSpec("weight", (a["max_len"], _elems(i[0])), "normal(0.02)", decay=False),)
            if a["kind"] == "learned"
            else ()
        ),
        cost=lambda a, i, o, T: Cost(flops=float(_elems(i[0])) * (3 if a["kind"] == "rope" else 1)),
        doc="add learned/sinusoidal positions, or rotate heads (rope)",
    )
)

# -- attention --------------------------------------------------------------------------------


def _attention_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    q, k, v = (_float_seq(t, "attention") for t in ins)
    h, kvh = attrs["heads"], attrs["kv_heads"]
    if q.feature % h:
        raise ShapeError(f"attention heads={h} do not divide the query width {q.feature}")
    if h % kvh:
        raise ShapeError(f"kv_heads={kvh} must divide heads={h}")
    hd = q.feature // h
    if k.feature != kvh * hd or v.feature != kvh * hd:
        raise ShapeError(
            f"keys/values of width {k.feature}/{v.feature} do not fit {kvh} kv heads of width {hd}"
        )
    return (q,)


def _attention_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    d = _elems(ins[0])
    ctx = T if attrs["mask"] == "none" else (T + 1) / 2
    if attrs["window"] is not None:
        ctx = min(ctx, attrs["window"])
    kv = 0 if attrs["window"] is not None else 2 * _elems(ins[1]) * F32
    return Cost(
        flops=4.0 * d * ctx,
        act_bytes=3 * d * F32,
        kv_bytes=kv,
        state_bytes=(
            2 * _elems(ins[1]) * F32 * attrs["window"] if attrs["window"] is not None else 0
        ),
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
            "dropout": AttrSpec(NUM, 0.0),
        },
        _attention_shape,
        cost=_attention_cost,
        doc="scaled dot-product attention of q (B,T,H*hd), k, v (B,T,KV*hd)",
    )
)

# -- recurrences --------------------------------------------------------------------------------
# Cells lowered to torch.nn.LSTM/GRU/RNN, with their gate counts.
CELL_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# Cells of backends/torch/modules/cells.py: leaky (tau) RNNs, minGRU/minLSTM, diagonal SSMs.
NEW_CELLS = (
    "leaky_tanh",
    "leaky_relu",
    "mingru",
    "minlstm",
    "diag_gru",
    "s4d_zoh",
    "s4d_bilinear",
    "lru",
    "selective",
    "gla",
    "delta",
)
SSM_CELLS = ("s4d_zoh", "s4d_bilinear", "lru", "selective")
SCAN_MODES = ("sequential", "auto", "associative", "chunked")
# Cells whose recurrence is linear and diagonal in h (h_t = a_t h_{t-1} + b_t, real a_t),
# so every mode of backends/torch/scans/linear.py applies; the others are sequential.
LINEAR_CELLS = ("mingru", "minlstm", "s4d_zoh", "s4d_bilinear", "selective")
# Matrix-state cells (per head S (dk, dv)) run by backends/torch/scans/matrix.py, which
# has a sequential and a chunked form but no associative one.
MATRIX_CELLS = ("gla", "delta")
# Nonlinear cells with a diagonal Jacobian d h_t / d h_{t-1}: besides the exact loop they
# run as a Newton solve over the whole sequence (backends/torch/scans/newton.py, ParaRNN).
NEWTON_CELLS = ("diag_gru",)
NEWTON_ITERS, NEWTON_TOL = 8, 1e-6


def scan_modes(cell: str) -> tuple[str, ...]:
    """The `mode` values a scan with `cell` accepts (auto = the fastest that is exact)."""
    if cell in MATRIX_CELLS:
        return ("sequential", "auto", "chunked")
    if cell in NEWTON_CELLS:
        return ("sequential", "auto", "newton")
    return SCAN_MODES if cell in LINEAR_CELLS else ("sequential", "auto")


def matrix_dims(attrs: Attrs) -> tuple[int, int, int]:
    """(heads, dk, dv) of a gla/delta scan: dv = hidden / heads; dk = `state` (the key
    width per head) or dv when unset."""
    heads = attrs["heads"]
    dv = attrs["hidden"] // heads
    return heads, attrs["state"] or dv, dv


def _scan_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float_seq(ins[0], "scan")
    cell, h = attrs["cell"], attrs["hidden"]
    if attrs["mode"] not in scan_modes(cell):
        raise ShapeError(
            f"scan cell {cell} supports modes {scan_modes(cell)}, not {attrs['mode']!r}"
        )
    if cell in CELL_GATES:
        dirs = 2 if attrs["bidirectional"] else 1
        hs = TensorType((attrs["layers"] * dirs, "B", h))
        parts = (("h", hs), ("c", hs)) if cell == "lstm" else (("h", hs),)
        return (t.with_feature(h * dirs), StateType(parts))
    if attrs["layers"] != 1 or attrs["bidirectional"]:
        raise ShapeError(f"scan cell {cell} has one layer and one direction")
    if cell in MATRIX_CELLS:
        if h != t.feature:
            raise ShapeError(
                f"a {cell} layer keeps the width: hidden={h} must equal the input width {t.feature}"
            )
        heads = attrs["heads"]
        if heads is None or heads <= 0 or h % heads:
            raise ShapeError(f"{cell}: heads={heads} must divide the width {h}")
        nh, dk, dv = matrix_dims(attrs)
        return (t, StateType((("S", TensorType(("B", nh, dk, dv))),)))
    if cell in SSM_CELLS:
        if h != t.feature:
            raise ShapeError(
                f"an ssm keeps the width: hidden={h} must equal the input width {t.feature}"
            )
        if attrs["state"] is None:
            raise ShapeError(f"scan cell {cell} needs the attribute 'state'")
        n = attrs["state"]
        # LRU carries a complex state as (..., 2) real/imaginary pairs.
        dims = ("B", h, n, 2) if cell == "lru" else ("B", h, n)
        return (t, StateType((("h", TensorType(dims)),)))
    return (t.with_feature(h), StateType((("h", TensorType(("B", h))),)))


def _scan_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    """nn cells: parameters named exactly as torch.nn.LSTM/GRU/RNN name them; the others
    as the attributes of their module in backends/torch/modules/cells.py."""
    cell = attrs["cell"]
    if cell not in CELL_GATES:
        return _new_cell_params(attrs, _elems(ins[0]))
    h, g = attrs["hidden"], CELL_GATES[cell]
    dirs = 2 if attrs["bidirectional"] else 1
    init = f"uniform({1.0 / math.sqrt(h)!r})"
    ps = []
    for layer in range(attrs["layers"]):
        d_in = _elems(ins[0]) if layer == 0 else h * dirs
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            ps += [
                ParamSpec(f"weight_ih{sfx}", (g * h, d_in), init),
                ParamSpec(f"weight_hh{sfx}", (g * h, h), init),
            ]
            if attrs["bias"]:
                ps += [
                    ParamSpec(f"bias_ih{sfx}", (g * h,), init, decay=False),
                    ParamSpec(f"bias_hh{sfx}", (g * h,), init, decay=False),
                ]
    return tuple(ps)


def _new_cell_params(attrs: Attrs, d: int) -> tuple[ParamSpec, ...]:
    """Parameters of the cells.py cells. Decay rates (tau, A_log, log_dt, nu_log,
    theta_log, dt_bias) get no weight decay: shrinking them towards 0 would change the
    timescales, not regularise."""
    cell, h, n = attrs["cell"], attrs["hidden"], attrs["state"]
    u_in = f"uniform({1.0 / math.sqrt(d)!r})"
    ps: list[ParamSpec] = []
    if cell.startswith("leaky_"):
        u_h = f"uniform({1.0 / math.sqrt(h)!r})"
        ps += [ParamSpec("weight_ih", (h, d), u_in), ParamSpec("weight_hh", (h, h), u_h)]
        if attrs["bias"]:
            ps.append(ParamSpec("bias", (h,), "zeros", decay=False))
        # tau = 1 + softplus(tau_raw) >= 1; tau - 1 starts log-uniform in [0.01, 1].
        ps.append(ParamSpec("tau_raw", (h,), "inv_softplus_log_uniform(0.01,1.0)", decay=False))
    elif cell in ("mingru", "minlstm"):
        gates = ("z", "h") if cell == "mingru" else ("f", "i", "h")
        for g in gates:
            ps.append(ParamSpec(f"weight_{g}", (h, d), u_in))
            if attrs["bias"]:
                ps.append(ParamSpec(f"bias_{g}", (h,), "zeros", decay=False))
    elif cell == "diag_gru":
        # [z, r, c] stacked like nn.GRU; the recurrent weights are (3, H) per-unit vectors.
        ps.append(ParamSpec("weight_ih", (3 * h, d), u_in))
        ps.append(ParamSpec("weight_hh", (3, h), "uniform(0.5)"))
        if attrs["bias"]:
            ps.append(ParamSpec("bias", (3 * h,), "zeros", decay=False))
    elif cell in MATRIX_CELLS:
        nh, dk, _dv = matrix_dims(attrs)
        ps += [
            ParamSpec("weight_q", (nh * dk, d), u_in),
            ParamSpec("weight_k", (nh * dk, d), u_in),
            ParamSpec("weight_v", (h, d), u_in),
        ]
        if cell == "gla":
            # The gate bias sets the initial decay rates: no weight decay on it.
            ps += [
                ParamSpec("weight_g", (nh * dk, d), u_in),
                ParamSpec("bias_g", (nh * dk,), "zeros", decay=False),
            ]
        else:
            ps += [
                ParamSpec("weight_beta", (nh, d), u_in),
                ParamSpec("bias_beta", (nh,), "zeros", decay=False),
            ]
        ps.append(ParamSpec("weight_o", (h, h), f"uniform({1.0 / math.sqrt(h)!r})"))
    elif cell in ("s4d_zoh", "s4d_bilinear"):
        ps += [
            ParamSpec("A_log", (h, n), "s4d_real", decay=False),
            ParamSpec("log_dt", (h,), "log_log_uniform(0.001,0.1)", decay=False),
            ParamSpec("B", (h, n), "ones"),
            ParamSpec("C", (h, n), f"normal({1.0 / math.sqrt(n)!r})"),
            ParamSpec("D", (h,), "ones", decay=False),
        ]
    elif cell == "lru":
        c_std = f"normal({1.0 / math.sqrt(2 * n)!r})"
        ps += [
            ParamSpec("nu_log", (h, n), "lru_nu(0.9,0.999)", decay=False),
            ParamSpec("theta_log", (h, n), "lru_theta(0.314)", decay=False),
            ParamSpec("B_re", (h, n), "normal(0.7071067811865476)"),
            ParamSpec("B_im", (h, n), "normal(0.7071067811865476)"),
            ParamSpec("C_re", (h, n), c_std),
            ParamSpec("C_im", (h, n), c_std),
            ParamSpec("D", (h,), "ones", decay=False),
        ]
    else:  # selective
        ps += [
            ParamSpec("A_log", (h, n), "s4d_real", decay=False),
            ParamSpec("dt_weight", (h, d), u_in),
            ParamSpec("dt_bias", (h,), "inv_softplus_log_uniform(0.001,0.1)", decay=False),
            ParamSpec("B_weight", (n, d), u_in),
            ParamSpec("C_weight", (n, d), u_in),
            ParamSpec("D", (h,), "ones", decay=False),
        ]
    return tuple(ps)


def _scan_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    cell, h = attrs["cell"], attrs["hidden"]
    if cell not in CELL_GATES:
        return _new_cell_cost(attrs, _elems(ins[0]))
    g = CELL_GATES[cell]
    dirs = 2 if attrs["bidirectional"] else 1
    flops = 0.0
    for layer in range(attrs["layers"]):
        d_in = _elems(ins[0]) if layer == 0 else h * dirs
        flops += dirs * 2.0 * g * h * (d_in + h)
    n_state = len(outs[1].parts)  # type: ignore[union-attr]
    return Cost(
        flops=flops,
        act_bytes=attrs["layers"] * dirs * g * h * F32,
        state_bytes=n_state * attrs["layers"] * dirs * h * F32,
    )


def _new_cell_cost(attrs: Attrs, d: int) -> Cost:
    """Per-token FLOPs (matmuls 2 per multiply-add, plus the elementwise recurrence) and
    the carried state of the cells.py cells."""
    cell, h, n = attrs["cell"], attrs["hidden"], attrs["state"] or 0
    if cell.startswith("leaky_"):
        # W_ih x + W_hh h, nonlinearity (~4), leaky mix (3).
        return Cost(flops=2.0 * h * (d + h) + 7.0 * h, act_bytes=2 * h * F32, state_bytes=h * F32)
    if cell in ("mingru", "minlstm"):
        g = 2 if cell == "mingru" else 3
        # sigmoids (~4 each), minLSTM's normalisation (3), the scan step a*h + b (3).
        return Cost(
            flops=2.0 * g * h * d + 4.0 * (g - 1) * h + (3.0 if g == 3 else 0.0) * h + 3.0 * h,
            act_bytes=(g + 1) * h * F32,
            state_bytes=h * F32,
        )
    if cell == "diag_gru":
        # W x (3H x D), two sigmoids (~4 each) and a tanh (~4), u*h (3), r*h (1), the
        # mix h + z (c - h) (3). Newton iterations re-evaluate the step; the per-token
        # work of the exact recurrence is counted here.
        return Cost(flops=2.0 * 3 * h * d + 19.0 * h, act_bytes=4 * h * F32, state_bytes=h * F32)
    if cell in MATRIX_CELLS:
        nh, dk, dv = matrix_dims(attrs)
        hk, state = nh * dk, nh * dk * dv
        if cell == "gla":
            # q/k/g/v/o projections; logsigmoid (~4) per key dim; per state entry the
            # decay (1), the outer product k^T v (2) and the readout q S (2).
            flops = 2.0 * d * (3 * hk + h) + 2.0 * h * h + 4.0 * hk + 5.0 * state
            act = 3 * hk + 2 * h
        else:
            # q/k/v/beta/o projections; two L2 norms (~3 each); per state entry k S (2),
            # the rank-1 update beta k^T (v - k S) (2) and the readout q S (2).
            flops = 2.0 * d * (2 * hk + h + nh) + 2.0 * h * h + 6.0 * hk + 6.0 * state
            act = 2 * hk + 2 * h + nh
        return Cost(flops=flops, act_bytes=act * F32, state_bytes=state * F32)
    if cell == "lru":
        # Complex a*h + b (6 + 2), gamma*B*x (4), Re(C h) (3) per state; 2 floats per state.
        return Cost(
            flops=15.0 * h * n + 2.0 * h, act_bytes=2 * h * n * F32, state_bytes=2 * h * n * F32
        )
    if cell == "selective":
        # dt/B/C projections, softplus, exp(dt A) (2), dt B x (2), a*h + b (2), C h (2).
        return Cost(
            flops=2.0 * d * (h + 2 * n) + 5.0 * h + 8.0 * h * n,
            act_bytes=(h + 2 * n + 2 * h * n) * F32,
            state_bytes=h * n * F32,
        )
    # s4d: time-invariant Abar/Bbar; Bbar x (1), a*h + b (2), C h (2), plus D x.
    return Cost(flops=5.0 * h * n + 2.0 * h, act_bytes=h * n * F32, state_bytes=h * n * F32)


register_op(
    OpDef(
        "scan",
        (1, 1),
        {
            "cell": AttrSpec(STR, choices=(*CELL_GATES, *NEW_CELLS)),
            "hidden": AttrSpec(INT),
            "layers": AttrSpec(INT, 1),
            "bidirectional": AttrSpec(BOOL, False),
            "bias": AttrSpec(BOOL, True),
            "mode": AttrSpec(STR, "sequential", (*SCAN_MODES, "newton")),
            "state": AttrSpec(INT + NONE, None),
            "heads": AttrSpec(INT + NONE, None),
            "chunk": AttrSpec(INT + NONE, None),
            "iters": AttrSpec(INT + NONE, None),
            "tol": AttrSpec(NUM + NONE, None),
        },
        _scan_shape,
        _scan_params,
        _scan_cost,
        doc="recurrence over time with a built-in cell; outputs (y, final state); "
        "`state` is an ssm cell's states per channel (gla/delta: the key width per "
        "head); `heads` and `chunk` apply to the matrix-state cells gla and delta; `iters` "
        "and `tol` are the Newton budget and tolerance of diag_gru",
    )
)

# -- control ---------------------------------------------------------------------------------------
register_op(
    OpDef(
        "loop",
        (1, 1),
        {"steps": AttrSpec(INT), "copies": AttrSpec(INT, 1)},
        _same,
        regions=True,
        doc="apply the body regions `steps` times; step s uses region s % copies",
    )
)
