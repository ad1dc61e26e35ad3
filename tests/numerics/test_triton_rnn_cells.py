"""The fused RNN-cell kernels (Triton interpreter on CPU) against naive.py and nn.LSTM/nn.GRU.

The leaky (tau) RNN kernel against naive.py in float64 (T = 1, 63, 257; H = 12, 13, 20;
tau at both extremes), the torch.library ops (opcheck; no graph break under torch.compile), and
FusedLSTM / FusedGRU (fused.py), which on CPU are exactly nn.LSTM / nn.GRU.

Forward, final states and every gradient (relative RMS, float32); the independent oracle
is nn.LSTM / nn.GRU with copied weights, through the torch input projection. H = 20 is
not a multiple of the 16-wide blocks; T = 1, 7, 33; outputs pre-filled with NaN to catch
unwritten elements; saturated gates (pre-activations scaled by 10).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

triton = pytest.importorskip("triton")

from archc.backends.triton.fallback import logged_fallbacks  # noqa: E402
from archc.backends.triton.rnn_cells.naive import (  # noqa: E402
    gru_sequence_naive,
    leaky_sequence_naive,
    lstm_sequence_naive,
)
from archc.backends.triton.rnn_cells.op import (  # noqa: E402
    MAX_HIDDEN,
    can_lower,
    gru_sequence,
    launch,
    leaky_sequence,
    lstm_sequence,
    use_kernel,
)
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5
GATES = {"lstm": 4, "gru": 3}


def _inputs(cell: str, B: int, T: int, H: int, scale: float, with_h0: bool) -> list[Tensor | None]:
    G = GATES[cell]
    xp = (scale * torch.randn(B, T, G * H)).requires_grad_()
    w = (torch.randn(G * H, H) / H**0.5).requires_grad_()
    h0 = torch.randn(B, H).requires_grad_() if with_h0 else None
    if cell == "lstm":
        c0 = torch.randn(B, H).requires_grad_() if with_h0 else None
        return [xp, w, h0, c0]
    return [xp, w, torch.randn(G * H).requires_grad_(), h0]


def _run(cell: str, ins: list[Tensor | None], naive: bool) -> list[Tensor]:
    if cell == "lstm":
        xp, w, h0, c0 = ins
        B, H = xp.shape[0], w.shape[1]
        if naive:
            h0 = h0 if h0 is not None else torch.zeros(B, H)
            c0 = c0 if c0 is not None else torch.zeros(B, H)
            y, (h, c) = lstm_sequence_naive(xp, w, h0, c0)
        else:
            y, (h, c) = lstm_sequence(xp, w, h0, c0)
        return [y, h, c]
    xp, w, b, h0 = ins
    if naive:
        h0 = h0 if h0 is not None else torch.zeros(xp.shape[0], w.shape[1])
        y, h = gru_sequence_naive(xp, w, b, h0)
    else:
        y, h = gru_sequence(xp, w, b, h0)
    return [y, h]


CASES = [
    # (B, T, H, pre-activation scale, with initial state)
    (1, 1, 16, 1.0, True),
    (2, 7, 20, 1.0, True),  # H not a multiple of 16
    (2, 33, 32, 1.0, False),
    (2, 7, 20, 10.0, True),  # saturated gates
]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("B", "T", "H", "scale", "with_h0"), CASES)
def test_matches_naive(cell: str, B: int, T: int, H: int, scale: float, with_h0: bool) -> None:
    ins = _inputs(cell, B, T, H, scale, with_h0)
    leaves = [t for t in ins if t is not None]
    out = _run(cell, ins, naive=False)
    ref = _run(cell, ins, naive=True)
    for o, r in zip(out, ref, strict=True):
        assert o.shape == r.shape
        assert rel_rms(o, r) < TOL
    gys = [torch.randn_like(r) for r in ref]
    g_out = torch.autograd.grad(out, leaves, gys)
    g_ref = torch.autograd.grad(ref, leaves, gys)
    for name, g, gr in zip(["xproj", "w_hh", "3rd", "4th"], g_out, g_ref, strict=False):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, gr) < TOL, name


@pytest.mark.parametrize("T", [1, 7, 33])
def test_lstm_matches_nn_lstm(T: int) -> None:
    B, Din, H = 2, 5, 20
    ref = torch.nn.LSTM(Din, H, batch_first=True)
    w_ih = ref.weight_ih_l0.detach().clone().requires_grad_()
    w_hh = ref.weight_hh_l0.detach().clone().requires_grad_()
    b = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().clone().requires_grad_()
    x = torch.randn(B, T, Din, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)
    c0 = torch.randn(B, H, requires_grad=True)

    y, (h, c) = lstm_sequence(x @ w_ih.t() + b, w_hh, h0, c0)
    yr, (hr, cr) = ref(x, (h0[None], c0[None]))
    for o, r in [(y, yr), (h, hr[0]), (c, cr[0])]:
        assert rel_rms(o, r) < TOL
    gys = [torch.randn_like(t) for t in (y, h, c)]
    g = torch.autograd.grad([y, h, c], [x, w_ih, w_hh, b, h0, c0], gys)
    params = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0]
    gr = torch.autograd.grad([yr, hr[0], cr[0]], [x, *params, h0, c0], gys)
    for name, a, r in zip(["x", "w_ih", "w_hh", "b", "h0", "c0"], g, gr, strict=True):
        assert rel_rms(a, r) < TOL, name


@pytest.mark.parametrize("T", [1, 7, 33])
def test_gru_matches_nn_gru(T: int) -> None:
    B, Din, H = 2, 5, 20
    ref = torch.nn.GRU(Din, H, batch_first=True)
    w_ih = ref.weight_ih_l0.detach().clone().requires_grad_()
    w_hh = ref.weight_hh_l0.detach().clone().requires_grad_()
    b_ih = ref.bias_ih_l0.detach().clone().requires_grad_()
    b_hh = ref.bias_hh_l0.detach().clone().requires_grad_()
    x = torch.randn(B, T, Din, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)

    y, h = gru_sequence(x @ w_ih.t() + b_ih, w_hh, b_hh, h0)
    yr, hr = ref(x, h0[None])
    assert rel_rms(y, yr) < TOL
    assert rel_rms(h, hr[0]) < TOL
    gys = [torch.randn_like(t) for t in (y, h)]
    g = torch.autograd.grad([y, h], [x, w_ih, w_hh, b_ih, b_hh, h0], gys)
    params = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    gr = torch.autograd.grad([yr, hr[0]], [x, *params, h0], gys)
    for name, a, r in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"], g, gr, strict=True):
        assert rel_rms(a, r) < TOL, name


def _nan(*shape: int) -> Tensor:
    return torch.full(shape, float("nan"))


@pytest.mark.parametrize("T", [1, 7])
def test_lstm_kernels_write_every_output(T: int) -> None:
    B, H = 2, 20
    xp, w = torch.randn(B, T, 4 * H), torch.randn(4 * H, H) / H**0.5
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    y, cs, hT, cT = _nan(B, T, H), _nan(B, T, H), _nan(B, H), _nan(B, H)
    launch("lstm_fwd", B, T, H, xp, w, h0, c0, y, cs, hT, cT)
    yr, (hr, cr) = lstm_sequence_naive(xp, w, h0, c0)
    for o, r in [(y, yr), (hT, hr), (cT, cr), (hT, y[:, -1]), (cs[:, -1], cr)]:
        assert torch.isfinite(o).all()
        assert rel_rms(o, r) < TOL
    dx, dh0, dc0 = _nan(B, T, 4 * H), _nan(B, H), _nan(B, H)
    dy, dhT, dcT = torch.randn(B, T, H), torch.randn(B, H), torch.randn(B, H)
    launch("lstm_bwd", B, T, H, xp, w, h0, c0, y, cs, dy, dhT, dcT, dx, dh0, dc0)
    for o in (dx, dh0, dc0):
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("T", [1, 7])
def test_gru_kernels_write_every_output(T: int) -> None:
    B, H = 2, 20
    xp, w, b = torch.randn(B, T, 3 * H), torch.randn(3 * H, H) / H**0.5, torch.randn(3 * H)
    h0 = torch.randn(B, H)
    y, hT = _nan(B, T, H), _nan(B, H)
    launch("gru_fwd", B, T, H, xp, w, b, h0, y, hT)
    yr, hr = gru_sequence_naive(xp, w, b, h0)
    for o, r in [(y, yr), (hT, hr)]:
        assert torch.isfinite(o).all()
        assert rel_rms(o, r) < TOL
    dx, dg, dh0 = _nan(B, T, 3 * H), _nan(B, T, 3 * H), _nan(B, H)
    dy, dhT = torch.randn(B, T, H), torch.randn(B, H)
    launch("gru_bwd", B, T, H, xp, w, b, h0, y, dy, dhT, dx, dg, dh0)
    for o in (dx, dg, dh0):
        assert torch.isfinite(o).all()


def test_can_lower() -> None:
    assert can_lower("cuda", torch.float32, 20, "lstm") == (True, "ok")
    assert can_lower("cuda", torch.bfloat16, MAX_HIDDEN, "gru")[0]
    ok, why = can_lower("cuda", torch.float32, MAX_HIDDEN + 1, "lstm")
    assert not ok and "hidden size" in why and "nn.LSTM" in why
    ok, why = can_lower("cpu", torch.float32, 20, "lstm")
    assert not ok and "CUDA" in why
    ok, why = can_lower("cuda", torch.float64, 20, "gru")
    assert not ok and "dtype" in why
    ok, why = can_lower("cuda", torch.float32, 20, "rnn_tanh")
    assert not ok and "no fused kernel" in why


def test_fallback_is_logged() -> None:
    assert not use_kernel("cuda", torch.float32, 4096, "lstm")
    _, why = can_lower("cuda", torch.float32, 4096, "lstm")
    assert ("rnn_cells.lstm", why) in logged_fallbacks()  # logged once per (kernel, reason)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="xproj"):
        lstm_sequence(torch.randn(2, 3, 10), torch.randn(8, 2))
    with pytest.raises(ValueError, match="w_hh"):
        gru_sequence(torch.randn(2, 3, 12), torch.randn(12, 3))


# ----------------------------------------------------------------------------- leaky RNN

LEAKY_CASES = [
    # (B, T, H, tau_raw shift): tau = 1 + softplus(tau_raw + shift)
    (2, 1, 12, 0.0),
    (3, 63, 13, 0.0),  # odd H: padded to a 16-wide block
    (2, 257, 20, 0.0),
    (2, 63, 12, -30.0),  # tau -> 1: alpha = 1, the plain RNN
    (2, 63, 12, 8.0),  # tau ~ 9: slow units
    (2, 63, 12, 1000.0),  # tau ~ 1000: h barely moves
]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("B", "T", "H", "shift"), LEAKY_CASES)
def test_leaky_matches_naive_f64(nonlinearity: str, B: int, T: int, H: int, shift: float) -> None:
    """Forward, final state and the gradients of u, W_hh, tau_raw (through alpha) and h0."""
    u = torch.randn(B, T, H, requires_grad=True)
    w = (0.9 * torch.randn(H, H) / H**0.5).requires_grad_()
    tau_raw = (torch.randn(H) + shift).requires_grad_()
    h0 = torch.randn(B, H, requires_grad=True)
    leaves = [u, w, tau_raw, h0]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]

    def run(u, w, tau_raw, h0, fn):  # type: ignore[no-untyped-def]
        alpha = 1.0 / (1.0 + torch.nn.functional.softplus(tau_raw))
        return fn(u, w, alpha, h0, nonlinearity)

    out = run(*leaves, leaky_sequence)
    ref = run(*ref_leaves, leaky_sequence_naive)
    for o, r in zip(out, ref, strict=True):
        assert o.dtype == torch.float32 and o.shape == r.shape
        assert rel_rms(o, r) < 1e-5
    gys = [torch.randn_like(r) for r in ref]
    g = torch.autograd.grad(out, leaves, [gy.float() for gy in gys])
    gr = torch.autograd.grad(ref, ref_leaves, gys)
    for name, a, r in zip(["u", "w_hh", "tau_raw", "h0"], g, gr, strict=True):
        assert torch.isfinite(a).all(), name
        # tau ~ 1000 makes the tau_raw gradient ~1e-6 of the rest: bound its denominator.
        assert rel_rms(a, r, floor=1e-8) < 1e-4, name


def test_leaky_without_h0_matches_leaky_rnn_module() -> None:
    """The op with LeakyRNN's own parameters reproduces LeakyRNN (cells.py)."""
    from archc.backends.torch.modules.cells import LeakyRNN

    for nl in ("tanh", "relu"):
        m = LeakyRNN(5, 12, nonlinearity=nl)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn_like(p) / 3)
        x = torch.randn(2, 9, 5)
        yr, hr = m(x)
        u = torch.nn.functional.linear(x, m.weight_ih, m.bias)
        y, h = leaky_sequence(u, m.weight_hh, 1.0 / m.tau(), None, nl)
        assert rel_rms(y, yr) < 1e-5 and rel_rms(h, hr) < 1e-5


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("T", [1, 7])
def test_leaky_kernels_write_every_output(T: int, relu: bool) -> None:
    B, H = 2, 12
    u, w = torch.randn(B, T, H), torch.randn(H, H) / H**0.5
    alpha, h0 = torch.rand(H), torch.randn(B, H)
    y, hT = _nan(B, T, H), _nan(B, H)
    launch("leaky_fwd", B, T, H, u, w, alpha, h0, y, hT, RELU=relu)
    yr, hr = leaky_sequence_naive(u, w, alpha, h0, "relu" if relu else "tanh")
    for o, r in [(y, yr), (hT, hr)]:
        assert torch.isfinite(o).all()
        assert rel_rms(o, r) < TOL
    du, dalpha, dh0 = _nan(B, T, H), _nan(B, H), _nan(B, H)
    dy, dhT = torch.randn(B, T, H), torch.randn(B, H)
    launch("leaky_bwd", B, T, H, u, w, alpha, h0, y, dy, dhT, du, dalpha, dh0, RELU=relu)
    for o in (du, dalpha, dh0):
        assert torch.isfinite(o).all()


def test_leaky_can_lower_and_bad_args() -> None:
    assert can_lower("cuda", torch.float32, 12, "leaky") == (True, "ok")
    ok, why = can_lower("cuda", torch.float32, MAX_HIDDEN + 1, "leaky")
    assert not ok and "hidden size" in why
    with pytest.raises(ValueError, match="alpha"):
        leaky_sequence(torch.randn(2, 3, 4), torch.randn(4, 4), torch.rand(5))
    with pytest.raises(ValueError, match="nonlinearity"):
        leaky_sequence(torch.randn(2, 3, 4), torch.randn(4, 4), torch.rand(4), None, "gelu")


# ----------------------------------------------------------------------------- torch.library


def test_custom_ops_opcheck() -> None:
    """Schema, fake (meta) impls, autograd registration and AOT dispatch of every op."""
    import archc.backends.triton.diag_scan.op  # noqa: F401  (registers archc::diag_scan)

    B, T, H = 1, 2, 4
    r = torch.randn
    cases = [
        (torch.ops.archc.lstm_fwd, (r(B, T, 4 * H), r(4 * H, H), r(B, H), r(B, H))),
        (torch.ops.archc.gru_fwd, (r(B, T, 3 * H), r(3 * H, H), r(3 * H), r(B, H))),
        (torch.ops.archc.leaky_fwd, (r(B, T, H), r(H, H), torch.rand(H), r(B, H), True)),
        (torch.ops.archc.diag_scan, (torch.rand(B, T, H), r(B, T, H), r(B, H))),
        (torch.ops.archc.diag_scan, (torch.rand(B, T, H), r(B, T, H), None)),
    ]
    for op, args in cases:
        args = tuple(a.requires_grad_() if isinstance(a, Tensor) else a for a in args)
        torch.library.opcheck(op, args)


def test_backward_ops_opcheck() -> None:
    """The backward ops (themselves custom ops, so a compiled backward traces too)."""
    B, T, H = 1, 3, 4
    r = torch.randn
    xp, w, h0, c0 = r(B, T, 4 * H), r(4 * H, H), r(B, H), r(B, H)
    y, _, _, cs = torch.ops.archc.lstm_fwd(xp, w, h0, c0)
    torch.library.opcheck(
        torch.ops.archc.lstm_bwd, (xp, w, h0, c0, y, cs, r(B, T, H), r(B, H), r(B, H))
    )
    xg, wg, bg = r(B, T, 3 * H), r(3 * H, H), r(3 * H)
    y, _ = torch.ops.archc.gru_fwd(xg, wg, bg, h0)
    torch.library.opcheck(torch.ops.archc.gru_bwd, (xg, wg, bg, h0, y, r(B, T, H), r(B, H)))
    u, wl, alpha = r(B, T, H), r(H, H), torch.rand(H)
    y, _ = torch.ops.archc.leaky_fwd(u, wl, alpha, h0, False)
    args = (u, wl, alpha, h0, y, r(B, T, H), r(B, H), False)
    torch.library.opcheck(torch.ops.archc.leaky_bwd, args)


def test_compiles_without_graph_break() -> None:
    """torch.compile traces through the custom ops (fullgraph: a break would raise)."""
    B, T, H = 2, 5, 8

    def f(xp: Tensor, w: Tensor, u: Tensor, alpha: Tensor) -> Tensor:
        y, (h, c) = lstm_sequence(xp, w)
        z, g = leaky_sequence(u, w[:H], alpha)
        return y.sum() + h.sum() + c.sum() + z.sum() + g.sum()

    args = [torch.randn(B, T, 4 * H), torch.randn(4 * H, H) / 3, torch.randn(B, T, H)]
    args = [a.requires_grad_() for a in [*args, torch.rand(H)]]
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(*args)
    assert rel_rms(out, f(*args)) < 1e-6
    g = torch.autograd.grad(out, args)
    gr = torch.autograd.grad(f(*args), args)
    for a, b in zip(g, gr, strict=True):
        assert rel_rms(a, b) < 1e-6


# ----------------------------------------------------------------------------- fused.py


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_modules_are_nn_on_cpu(cell: str) -> None:
    """On CPU FusedLSTM / FusedGRU are nn.LSTM / nn.GRU: same state_dict, same outputs."""
    from archc.backends.torch.modules.fused import FusedGRU, FusedLSTM

    cls, ref_cls = (FusedLSTM, torch.nn.LSTM) if cell == "lstm" else (FusedGRU, torch.nn.GRU)
    torch.manual_seed(0)
    m = cls(5, 12, num_layers=2, batch_first=True)
    ref = ref_cls(5, 12, num_layers=2, batch_first=True)
    assert list(m.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(m.state_dict())
    x = torch.randn(3, 7, 5)
    out, out_ref = m(x), ref(x)
    assert torch.equal(out[0], out_ref[0])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([7, 4, 2]), batch_first=True)
    assert torch.equal(m(packed)[0].data, ref(packed)[0].data)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_layers_match_nn(cell: str, batch_first: bool) -> None:
    """fused.py's per-layer loop with the real kernels (interpreter) vs nn.LSTM / nn.GRU:
    2 layers, given initial states, every gradient."""
    from archc.backends.torch.modules.fused import fused_rnn_layers
    from archc.backends.triton.rnn_cells import op

    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    m = cls(5, 12, num_layers=2, batch_first=batch_first)
    x = torch.randn(2, 6, 5) if batch_first else torch.randn(6, 2, 5)
    x.requires_grad_()
    h0 = torch.randn(2, 2, 12, requires_grad=True)
    hx = (h0, torch.randn(2, 2, 12, requires_grad=True)) if cell == "lstm" else h0
    out, ref = fused_rnn_layers(m, x, hx, op), m(x, hx)
    flat = [out[0], *(out[1] if cell == "lstm" else [out[1]])]
    flat_ref = [ref[0], *(ref[1] if cell == "lstm" else [ref[1]])]
    for o, r in zip(flat, flat_ref, strict=True):
        assert rel_rms(o, r) < TOL
    leaves = [x, *(hx if cell == "lstm" else [hx]), *m.parameters()]
    gys = [torch.randn_like(r) for r in flat_ref]
    g = torch.autograd.grad(flat, leaves, gys)
    gr = torch.autograd.grad(flat_ref, leaves, gys)
    for a, r in zip(g, gr, strict=True):
        assert rel_rms(a, r) < TOL


def test_fused_refusals() -> None:
    from archc.backends.torch.modules.fused import _fused_rnn_refusal, fused_rnn

    x = torch.randn(2, 3, 4)
    assert _fused_rnn_refusal(torch.nn.LSTM(4, 8, batch_first=True), x) is None
    why = _fused_rnn_refusal(torch.nn.GRU(4, 8, bidirectional=True), x)
    assert why is not None and "bidirectional" in why
    why = _fused_rnn_refusal(torch.nn.LSTM(4, 8, proj_size=4), x)
    assert why is not None and "proj_size" in why
    why = _fused_rnn_refusal(torch.nn.LSTM(4, 8), x[0])
    assert why is not None and "batched" in why
    assert fused_rnn(torch.nn.LSTM(4, 8, batch_first=True), x, None) is None  # CPU


def test_compiled_lstm_builds_fused_and_emits_torch_only() -> None:
    """Compiled specs get FusedLSTM / FusedGRU (nn.LSTM / nn.GRU parameter names); the
    definitions the emitter copies into model.py import nothing (KernelHook stays None
    there, while archc sets it)."""
    import inspect
    from pathlib import Path

    import archc
    from archc.backends.torch.modules import fused

    specs = Path(__file__).resolve().parents[2] / "specs"
    model = archc.compile(specs / "lstm.yaml")
    lstm = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert lstm and all(type(m) is fused.FusedLSTM for m in lstm)
    assert "layers.1.lstm.weight_hh_l1" in model.state_dict()
    copied = [
        fused.KernelHook,
        fused.fused_rnn,
        fused.fused_rnn_layers,
        fused._fused_rnn_refusal,
        fused.FusedLSTM,
        fused.FusedGRU,
        fused.fused_leaky_rnn,
    ]
    for obj in copied:
        assert "import" not in inspect.getsource(obj), obj.__name__
    assert fused.KernelHook.load is not None
    assert "load = None" in inspect.getsource(fused.KernelHook)
