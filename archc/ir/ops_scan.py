"""The `scan` op: recurrence over time with a built-in cell (LSTM/GRU/RNN through
torch's kernels; tau RNNs, minGRU/minLSTM, diagonal SSMs, GLA/DeltaNet and the diagonal
GRU through backends/torch/modules/cells.py; Aaren through cells_aaren.py). Its cells,
modes, parameters and costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from archc.frontend.cell_expr import Call, Cell, cell_from_body, walk
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
    elems,
    float_seq,
)
from archc.ir.types import Attrs, ParamSpec, StateType, TensorType, Type

# -- cells --------------------------------------------------------------------------------
# Cells lowered to torch.nn.LSTM/GRU/RNN, with their gate counts.
CELL_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# Cells of backends/torch/modules/cells.py: leaky (tau) RNNs, minGRU/minLSTM, diagonal SSMs.
NEW_CELLS = (
    "leaky_tanh",
    "leaky_relu",
    "mingru",
    "minlstm",
    "diag_gru",
    "diag_lstm",
    "diag_rnn",
    "block_rnn",
    "s4d_zoh",
    "s4d_bilinear",
    "lru",
    "selective",
    "gla",
    "delta",
    "plstm",
    "aaren",
)
SSM_CELLS = ("s4d_zoh", "s4d_bilinear", "lru", "selective")
SCAN_MODES = ("sequential", "auto", "associative", "chunked")
# Cells whose recurrence is linear and diagonal in h (h_t = a_t h_{t-1} + b_t, real a_t),
# so every mode of backends/torch/scans/linear.py applies; the others are sequential.
LINEAR_CELLS = ("mingru", "minlstm", "s4d_zoh", "s4d_bilinear", "selective")
# Matrix-state cells (per head S (dk, dv)) run by backends/torch/scans/matrix.py, which
# has a sequential and a chunked form but no associative one.
MATRIX_CELLS = ("gla", "delta", "plstm")
# Nonlinear cells with a diagonal Jacobian d h_t / d h_{t-1}: besides the exact loop they
# run as a Newton solve over the whole sequence (backends/torch/scans/newton.py, ParaRNN).
NEWTON_CELLS = ("diag_gru", "diag_lstm", "diag_rnn", "block_rnn", "custom_diag")
# Custom cells written in the spec (`body` holds their canonical expressions):
# "custom_diag" when the state enters its update only elementwise (Newton applies).
CUSTOM_CELLS = ("custom", "custom_diag")
NEWTON_ITERS, NEWTON_TOL = 8, 1e-6
# Aaren (attention as an RNN): a softmax state (m, u, w) per head whose merge is
# associative but not linear, run by backends/torch/scans/associative.py.
AAREN_MODES = ("sequential", "auto", "associative")


def scan_modes(cell: str) -> tuple[str, ...]:
    """The `mode` values a scan with `cell` accepts (auto = the fastest that is exact)."""
    if cell in MATRIX_CELLS:
        return ("sequential", "auto", "chunked")
    if cell in NEWTON_CELLS:
        return ("sequential", "auto", "newton")
    if cell == "aaren":
        return AAREN_MODES
    return SCAN_MODES if cell in LINEAR_CELLS else ("sequential", "auto")


def matrix_dims(attrs: Attrs) -> tuple[int, int, int]:
    """(heads, dk, dv) of a gla/delta scan: dv = hidden / heads; dk = `state` (the key
    width per head) or dv when unset."""
    heads = attrs["heads"]
    dv = attrs["hidden"] // heads
    return heads, attrs["state"] or dv, dv


def _scan_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    """(y, final carry). A bidirectional cells.py cell concatenates its forward and
    backward outputs (width 2 * out, like nn.LSTM) and stacks their carries on a leading
    direction dim of 2."""
    y, carry = _one_way_shape(attrs, ins)
    if not attrs["bidirectional"] or attrs["cell"] in CELL_GATES:
        return (y, carry)
    assert isinstance(y, TensorType) and isinstance(carry, StateType)
    parts = tuple((n, TensorType((2, *t.dims), t.dtype)) for n, t in carry.parts)
    return (y.with_feature(2 * y.feature), StateType(parts))


def _one_way_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = float_seq(ins[0], "scan")
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
    if attrs["layers"] != 1:
        raise ShapeError(f"scan cell {cell} has one layer")
    if cell in CUSTOM_CELLS:
        c = cell_from_body(attrs["body"], t.feature)
        parts = tuple((k, TensorType(("B", w))) for k, w in c.state)
        return (t.with_feature(c.out_width), StateType(parts))
    if cell == "block_rnn" and (not attrs["block"] or attrs["block"] <= 0 or h % attrs["block"]):
        raise ShapeError(f"block_rnn: block={attrs['block']} must divide hidden={h}")
    if cell in (*MATRIX_CELLS, "aaren"):
        if h != t.feature:
            raise ShapeError(
                f"a {cell} layer keeps the width: hidden={h} must equal the input width {t.feature}"
            )
        heads = attrs["heads"]
        if heads is None or heads <= 0 or h % heads:
            raise ShapeError(f"{cell}: heads={heads} must divide the width {h}")
        if cell == "aaren":
            # Per head [u | m | w]: the weighted value sum (h / heads), the running max
            # score and the softmax denominator.
            return (t, StateType((("h", TensorType(("B", heads, h // heads + 2))),)))
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
    if cell == "diag_lstm":
        # Per unit the pair (c, h): backends/torch/modules/cells_diag_lstm.py.
        return (t.with_feature(h), StateType((("ch", TensorType(("B", h, 2))),)))
    return (t.with_feature(h), StateType((("h", TensorType(("B", h))),)))


def _scan_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    """nn cells: parameters named exactly as torch.nn.LSTM/GRU/RNN name them; the others
    as the attributes of their module in backends/torch/modules/cells.py."""
    cell = attrs["cell"]
    if cell not in CELL_GATES:
        ps = _new_cell_params(attrs, elems(ins[0]))
        if not attrs["bidirectional"]:
            return ps
        # Bidirectional(fwd, bwd): two independent copies, named as its state_dict keys.
        return tuple(replace(p, name=f"{d}.{p.name}") for d in ("fwd", "bwd") for p in ps)
    h, g = attrs["hidden"], CELL_GATES[cell]
    dirs = 2 if attrs["bidirectional"] else 1
    init = f"uniform({1.0 / math.sqrt(h)!r})"
    ps = []
    for layer in range(attrs["layers"]):
        d_in = elems(ins[0]) if layer == 0 else h * dirs
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
    if cell in CUSTOM_CELLS:
        return _custom_params(attrs, d)
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
    elif cell in ("diag_rnn", "block_rnn"):
        k = attrs["block"]
        # A tanh RNN's recurrent weights, per unit or per k x k block: entries uniform in
        # +-0.9 (diag: |u| < 1, contractive) or +-1/sqrt(k) (as nn.RNN's 1/sqrt(H)).
        hh = (
            ((h,), "uniform(0.9)")
            if cell == "diag_rnn"
            else ((h // k, k, k), f"uniform({1.0 / math.sqrt(k)!r})")
        )
        ps += [ParamSpec("weight_ih", (h, d), u_in), ParamSpec("weight_hh", *hh)]
        if attrs["bias"]:
            ps.append(ParamSpec("bias", (h,), "zeros", decay=False))
    elif cell == "diag_lstm":
        # [i, f, g, o] stacked like nn.LSTM; the recurrent weights are (4, H) per-unit
        # vectors, |u| <= 0.5 as the diagonal GRU's.
        ps.append(ParamSpec("weight_ih", (4 * h, d), u_in))
        ps.append(ParamSpec("weight_hh", (4, h), "uniform(0.5)"))
        if attrs["bias"]:
            ps.append(ParamSpec("bias", (4 * h,), "zeros", decay=False))
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
        elif cell == "plstm":
            # Per-head source / transition / mark gates. The transition bias sets the
            # initial memory: tanh(b_t) with b_t in [1, 3] is 0.76..0.995 (no decay on it).
            for g, init in (("s", "zeros"), ("t", "log_uniform(1.0,3.0)"), ("m", "zeros")):
                ps += [
                    ParamSpec(f"weight_{g}", (nh, d), u_in),
                    ParamSpec(f"bias_{g}", (nh,), init, decay=False),
                ]
        else:
            ps += [
                ParamSpec("weight_beta", (nh, d), u_in),
                ParamSpec("bias_beta", (nh,), "zeros", decay=False),
            ]
        ps.append(ParamSpec("weight_o", (h, h), f"uniform({1.0 / math.sqrt(h)!r})"))
    elif cell == "aaren":
        # The learned query (heads, h / heads) is fanned into by one head's key width.
        dv = h // attrs["heads"]
        ps += [
            ParamSpec("weight_k", (h, d), u_in),
            ParamSpec("weight_v", (h, d), u_in),
            ParamSpec("query", (attrs["heads"], dv), f"uniform({1.0 / math.sqrt(dv)!r})"),
            ParamSpec("weight_o", (h, h), f"uniform({1.0 / math.sqrt(h)!r})"),
        ]
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


def _custom_params(attrs: Attrs, d: int) -> tuple[ParamSpec, ...]:
    """One parameter set per call site of a custom cell: linear -> weight (out, in)
    uniform(1/sqrt(in)) and bias (zeros, no decay); diag -> a per-unit scale (ones);
    param -> a learned vector (zeros, no decay, like a bias)."""
    ps: list[ParamSpec] = []
    for s in cell_from_body(attrs["body"], d).sites:
        if s.fn == "linear":
            bound = f"uniform({1.0 / math.sqrt(s.d_in)!r})"
            ps.append(ParamSpec(f"{s.name}_weight", (s.d_out, s.d_in), bound))
            if s.bias:
                ps.append(ParamSpec(f"{s.name}_bias", (s.d_out,), "zeros", decay=False))
        elif s.fn == "diag":
            ps.append(ParamSpec(f"{s.name}_weight", (s.d_out,), "ones", decay=False))
        else:
            ps.append(ParamSpec(f"{s.name}_weight", (s.d_out,), "zeros", decay=False))
    return tuple(ps)


def _scan_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], T: int) -> Cost:
    cell, h = attrs["cell"], attrs["hidden"]
    if cell not in CELL_GATES:
        c = _new_cell_cost(attrs, elems(ins[0]))
        if not attrs["bidirectional"]:
            return c
        # Two cells, each over every token, each with its own carry.
        return replace(
            c,
            flops=2 * c.flops,
            ew_flops=2 * c.ew_flops,
            act_bytes=2 * c.act_bytes,
            state_bytes=2 * c.state_bytes,
        )
    g = CELL_GATES[cell]
    dirs = 2 if attrs["bidirectional"] else 1
    flops = 0.0
    for layer in range(attrs["layers"]):
        d_in = elems(ins[0]) if layer == 0 else h * dirs
        flops += dirs * 2.0 * g * h * (d_in + h)
    n_state = len(outs[1].parts)  # type: ignore[union-attr]
    # Gate nonlinearities (~4 each) and the state update (lstm c and h: 5; gru: 5).
    ew = attrs["layers"] * dirs * (4.0 * g + 5.0) * h
    return Cost(
        flops=flops,
        ew_flops=ew,
        act_bytes=attrs["layers"] * dirs * g * h * F32,
        state_bytes=n_state * attrs["layers"] * dirs * h * F32,
    )


def _custom_matmul_flops(cell: Cell) -> float:
    """The matmul-class part of a custom cell's FLOPs: 2 d_in d_out per linear() call."""
    total = 0.0
    for e in (*(e for _, e in cell.lets), *(e for _, e in cell.updates), cell.output):
        for sub in walk(e):
            if isinstance(sub, Call) and sub.fn == "linear":
                site = next(s for s in cell.sites if s.name == sub.site)
                total += 2.0 * site.d_in * site.d_out
    return total


def _new_cell_cost(attrs: Attrs, d: int) -> Cost:
    """Per-token FLOPs (matmul-class: 2 per multiply-add of the projections and dense
    recurrent maps; elementwise: the rest of the recurrence) and the carried state of
    the cells.py cells."""
    cell, h, n = attrs["cell"], attrs["hidden"], attrs["state"] or 0
    if cell in CUSTOM_CELLS:
        c = cell_from_body(attrs["body"], d)
        width = sum(w for _, w in c.state)
        return Cost(
            flops=_custom_matmul_flops(c),
            ew_flops=c.flops() - _custom_matmul_flops(c),
            act_bytes=(width + h) * F32,
            state_bytes=width * F32,
        )
    if cell.startswith("leaky_"):
        # W_ih x + W_hh h, nonlinearity (~4), leaky mix (3).
        return Cost(
            flops=2.0 * h * (d + h), ew_flops=7.0 * h, act_bytes=2 * h * F32, state_bytes=h * F32
        )
    if cell in ("mingru", "minlstm"):
        g = 2 if cell == "mingru" else 3
        # sigmoids (~4 each), minLSTM's normalisation (3), the scan step a*h + b (3).
        return Cost(
            flops=2.0 * g * h * d,
            ew_flops=4.0 * (g - 1) * h + (3.0 if g == 3 else 0.0) * h + 3.0 * h,
            act_bytes=(g + 1) * h * F32,
            state_bytes=h * F32,
        )
    if cell in ("diag_rnn", "block_rnn"):
        # W x (H x D); U h: H (diag) or k H (block) multiply-adds; tanh (~4); masked mix (3).
        rec = h if cell == "diag_rnn" else (attrs["block"] or 1) * h
        return Cost(
            flops=2.0 * h * d + (2.0 * rec if cell == "block_rnn" else 0.0),
            ew_flops=(2.0 * rec if cell == "diag_rnn" else 0.0) + 7.0 * h,
            act_bytes=2 * h * F32,
            state_bytes=h * F32,
        )
    if cell == "diag_lstm":
        # W x (4H x D); three sigmoids and two tanhs (~4 each), u*h (4 x 2), the cell
        # update f c + i g (3) and o tanh(c) (1). Newton re-evaluates the step; the
        # per-token work of the exact recurrence is counted here.
        return Cost(
            flops=2.0 * 4 * h * d, ew_flops=32.0 * h, act_bytes=6 * h * F32, state_bytes=2 * h * F32
        )
    if cell == "diag_gru":
        # W x (3H x D), two sigmoids (~4 each) and a tanh (~4), u*h (3), r*h (1), the
        # mix h + z (c - h) (3). Newton iterations re-evaluate the step; the per-token
        # work of the exact recurrence is counted here.
        return Cost(
            flops=2.0 * 3 * h * d, ew_flops=19.0 * h, act_bytes=4 * h * F32, state_bytes=h * F32
        )
    if cell in MATRIX_CELLS:
        nh, dk, dv = matrix_dims(attrs)
        hk, state = nh * dk, nh * dk * dv
        if cell == "gla":
            # q/k/g/v/o projections; logsigmoid (~4) per key dim; per state entry the
            # decay (1), the outer product k^T v (2) and the readout q S (2).
            flops = 2.0 * d * (3 * hk + h) + 2.0 * h * h + 4.0 * state
            ew = 4.0 * hk + state
            act = 3 * hk + 2 * h
        elif cell == "plstm":
            # q/k/v/o projections and three per-head gates (~4 each for the nonlinearity);
            # the source scales k (1 per key dim), the mark o (1 per value dim); per state
            # entry the transition (1), the outer product k^T v (2) and the readout q C (2).
            flops = 2.0 * d * (2 * hk + h + 3 * nh) + 2.0 * h * h + 4.0 * state
            ew = 12.0 * nh + hk + h + state
            act = 2 * hk + 2 * h + 3 * nh
        else:
            # q/k/v/beta/o projections; two L2 norms (~3 each); per state entry k S (2),
            # the rank-1 update beta k^T (v - k S) (2) and the readout q S (2).
            flops = 2.0 * d * (2 * hk + h + nh) + 2.0 * h * h + 6.0 * state
            ew = 6.0 * hk
            act = 2 * hk + 2 * h + nh
        return Cost(flops=flops, ew_flops=ew, act_bytes=act * F32, state_bytes=state * F32)
    if cell == "aaren":
        # k/v/o projections; the score q . k (2 per key dim); per head the max (1) and two
        # exps (~4 each) and w's update (2); per value dim u's update (3) and u / w (1).
        nh = attrs["heads"]
        return Cost(
            flops=2.0 * d * 2 * h + 2.0 * h * h,
            ew_flops=2.0 * h + 11.0 * nh + 4.0 * h,
            act_bytes=(3 * h + nh) * F32,
            state_bytes=(h + 2 * nh) * F32,
        )
    if cell == "lru":
        # Complex a*h + b (6 + 2), gamma*B*x (4), Re(C h) (3) per state; 2 floats per state.
        return Cost(
            ew_flops=15.0 * h * n + 2.0 * h,
            act_bytes=2 * h * n * F32,
            state_bytes=2 * h * n * F32,
        )
    if cell == "selective":
        # dt/B/C projections, softplus, exp(dt A) (2), dt B x (2), a*h + b (2), C h (2).
        return Cost(
            flops=2.0 * d * (h + 2 * n),
            ew_flops=5.0 * h + 8.0 * h * n,
            act_bytes=(h + 2 * n + 2 * h * n) * F32,
            state_bytes=h * n * F32,
        )
    # s4d: time-invariant Abar/Bbar; Bbar x (1), a*h + b (2), C h (2), plus D x.
    return Cost(ew_flops=5.0 * h * n + 2.0 * h, act_bytes=h * n * F32, state_bytes=h * n * F32)


# Registered by ops.py, with the other ops.
SCAN_OP = OpDef(
    "scan",
    (1, 1),
    {
        "cell": AttrSpec(STR, choices=(*CELL_GATES, *NEW_CELLS, *CUSTOM_CELLS)),
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
        "body": AttrSpec((tuple, type(None)), None),
        "block": AttrSpec(INT + NONE, None),
        # Set by the assign-kernels pass: the Triton kernel that runs this node, or
        # "torch: <why not>"; None until then (and not printed).
        "kernel": AttrSpec(STR + NONE, None),
    },
    _scan_shape,
    _scan_params,
    _scan_cost,
    doc="recurrence over time with a built-in cell; outputs (y, final state); "
    "`state` is an ssm cell's states per channel (gla/delta: the key width per "
    "head); `heads` applies to gla, delta, plstm and aaren, `chunk` to gla, delta and "
    "plstm; `iters` "
    "and `tol` are the Newton budget and tolerance of the Newton cells (diag_gru, "
    "diag_lstm, diag_rnn, block_rnn); `block` is block_rnn's block size",
)
