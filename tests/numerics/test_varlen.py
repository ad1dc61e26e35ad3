"""Variable-length batches: a right-padded batch run with `lengths` equals running each
sequence alone, unpadded.

The oracle for each sequence is an independent float64 step-by-step loop written from
the cell's formulas here (or torch.nn.LSTM/GRU/RNN itself on the unpadded sequence), so
every mode of every cell (sequential, associative, chunked, newton, auto) is checked
against something other than archc's own code: outputs at valid positions, exact zeros
past each length, final carries, and the gradients of inputs, initial carries and
parameters (the batch's gradient is the sum of the per-sequence ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from oracle_helpers import spec_text
from torch import nn

import archc
from archc.backends.torch.modules import cells
from archc.ir.ops_scan import scan_modes

B, D, N, HEADS = 3, 8, 3, 2
TOL = 1e-9  # float64 against float64: rounding only
P = dict[str, torch.Tensor]
# (params, x (1, L, D), h0 (1, *carry)) -> (y (1, L, out), final carry (1, *carry))
Ref = Callable[[P, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _sig(v: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def _softplus(v: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(v))


def _loop(
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    ys = []
    for t in range(x.shape[1]):
        h, y = step(h, x[:, t])
        ys.append(y)
    return torch.stack(ys, 1), h


def _leaky(act: Callable[[torch.Tensor], torch.Tensor]) -> Ref:
    def ref(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tau = 1.0 + _softplus(p["tau_raw"])

        def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pre = xt @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias"]
            h = (1.0 - 1.0 / tau) * h + act(pre) / tau
            return h, h

        return _loop(step, x, h0)

    return ref


def _mingru(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = _sig(xt @ p["weight_z"].T + p["bias_z"])
        h = (1.0 - z) * h + z * (xt @ p["weight_h"].T + p["bias_h"])
        return h, h

    return _loop(step, x, h0)


def _minlstm(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = _sig(xt @ p["weight_f"].T + p["bias_f"])
        i = _sig(xt @ p["weight_i"].T + p["bias_i"])
        h = f / (f + i) * h + i / (f + i) * (xt @ p["weight_h"].T + p["bias_h"])
        return h, h

    return _loop(step, x, h0)


def _diag_gru(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wz, wr, wc = p["weight_ih"].chunk(3, 0)
    bz, br, bc = p["bias"].chunk(3, 0)
    u = p["weight_hh"]

    def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = _sig(xt @ wz.T + u[0] * h + bz)
        r = _sig(xt @ wr.T + u[1] * h + br)
        c = torch.tanh(xt @ wc.T + u[2] * r * h + bc)
        h = (1.0 - z) * h + z * c
        return h, h

    return _loop(step, x, h0)


def _s4d(disc: str) -> Ref:
    def ref(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, dt = -torch.exp(p["A_log"]), torch.exp(p["log_dt"])[:, None]
        if disc == "zoh":
            abar = torch.exp(dt * a)
            bbar = (abar - 1.0) / a * p["B"]
        else:
            abar = (1.0 + dt * a / 2.0) / (1.0 - dt * a / 2.0)
            bbar = dt * p["B"] / (1.0 - dt * a / 2.0)

        def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = abar * h + bbar * xt[:, :, None]
            return h, (p["C"] * h).sum(-1) + p["D"] * xt

        return _loop(step, x, h0)

    return ref


def _lru(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # complex128 arithmetic; archc keeps real and imaginary parts apart.
    lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
    b = torch.complex(p["B_re"], p["B_im"]) * torch.sqrt(1.0 - lam.abs() ** 2)
    c = torch.complex(p["C_re"], p["C_im"])

    def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = lam * h + b * xt[:, :, None]
        return h, (c * h).sum(-1).real + p["D"] * xt

    y, h = _loop(step, x, torch.complex(h0[..., 0], h0[..., 1]))
    return y, torch.stack([h.real, h.imag], -1)


def _selective(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = -torch.exp(p["A_log"])

    def step(h: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = _softplus(xt @ p["dt_weight"].T + p["dt_bias"])
        bt, ct = xt @ p["B_weight"].T, xt @ p["C_weight"].T
        h = torch.exp(dt[:, :, None] * a) * h + (dt * xt)[:, :, None] * bt[:, None, :]
        return h, (h * ct[:, None, :]).sum(-1) + p["D"] * xt

    return _loop(step, x, h0)


def _per_head(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], HEADS, -1)


def _gla(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dk = p["weight_q"].shape[0] // HEADS

    def step(S: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = _per_head(xt @ p["weight_q"].T) / math.sqrt(dk)
        k, v = _per_head(xt @ p["weight_k"].T), _per_head(xt @ p["weight_v"].T)
        g = _sig(_per_head(xt @ p["weight_g"].T + p["bias_g"])) ** (1.0 / 16.0)
        S = g[..., None] * S + k[..., :, None] * v[..., None, :]
        o = (q[..., :, None] * S).sum(-2)
        return S, o.flatten(1) @ p["weight_o"].T

    return _loop(step, x, h0)


def _delta(p: P, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.norm(dim=-1, keepdim=True)

    def step(S: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = unit(_per_head(xt @ p["weight_q"].T)), unit(_per_head(xt @ p["weight_k"].T))
        v = _per_head(xt @ p["weight_v"].T)
        beta = _sig(xt @ p["weight_beta"].T + p["bias_beta"])[..., None, None]
        pred = (k[..., :, None] * S).sum(-2)
        S = S + beta * k[..., :, None] * (v - pred)[..., None, :]
        return S, (q[..., :, None] * S).sum(-2).flatten(1) @ p["weight_o"].T

    return _loop(step, x, h0)


def _newton_gru(mode: str) -> nn.Module:
    # iters >= T: Newton is exact after T iterations, so a slow convergence cannot fall
    # back silently; tol at rounding level.
    return cells.DiagGRU(D, D, mode=mode, iters=80, tol=1e-13)


# cell id (as in archc.ir.ops_scan) -> (module factory taking the mode, reference)
CELLS: dict[str, tuple[Callable[[str], nn.Module], Ref]] = {
    "leaky_tanh": (lambda m: cells.LeakyRNN(D, D, nonlinearity="tanh"), _leaky(torch.tanh)),
    "leaky_relu": (lambda m: cells.LeakyRNN(D, D, nonlinearity="relu"), _leaky(torch.relu)),
    "mingru": (lambda m: cells.MinGRU(D, D, mode=m), _mingru),
    "minlstm": (lambda m: cells.MinLSTM(D, D, mode=m), _minlstm),
    "diag_gru": (_newton_gru, _diag_gru),
    "s4d_zoh": (lambda m: cells.S4D(D, N, disc="zoh", mode=m), _s4d("zoh")),
    "s4d_bilinear": (lambda m: cells.S4D(D, N, disc="bilinear", mode=m), _s4d("bilinear")),
    "lru": (lambda m: cells.LRU(D, N), _lru),
    "selective": (lambda m: cells.SelectiveSSM(D, N, mode=m), _selective),
    # chunk 16 < T = 63: several chunks, padding inside and across chunk boundaries.
    "gla": (lambda m: cells.GLA(D, HEADS, 3, mode=m, chunk=16), _gla),
    "delta": (lambda m: cells.DeltaNet(D, HEADS, mode=m, chunk=16), _delta),
}
CASES = [(c, m) for c in CELLS for m in scan_modes(c)]


def lengths_for(t: int) -> torch.Tensor:
    """[T, T-5, 1] clamped to >= 1."""
    return torch.tensor([t, max(t - 5, 1), 1], dtype=torch.int64)


def make_cell(cell: str, mode: str) -> nn.Module:
    mod = CELLS[cell][0](mode).double()
    with torch.no_grad():
        for p in mod.parameters():
            p.normal_(0.0, 0.4)
    return mod


def padded_input(t: int, lengths: torch.Tensor, d: int = D) -> torch.Tensor:
    """(B, T, d) float64 with large random values in the padding: any leak shows."""
    x = torch.randn(len(lengths), t, d, dtype=torch.float64)
    pad = torch.arange(t)[None, :] >= lengths[:, None]
    return torch.where(pad[..., None], 5.0 * torch.randn_like(x), x)


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = TOL) -> None:
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol * max(1.0, b.abs().max().item()), f"{what}: max abs error {err:.3e}"


@pytest.mark.parametrize("t", [1, 63])
@pytest.mark.parametrize(("cell", "mode"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_cell_batch_equals_each_sequence_alone(cell: str, mode: str, t: int) -> None:
    mod, ref = make_cell(cell, mode), CELLS[cell][1]
    lengths = lengths_for(t)
    x = padded_input(t, lengths).requires_grad_()
    with torch.no_grad():
        carry = mod(x[:, :1])[1]
    h0 = (0.5 * torch.randn_like(carry)).requires_grad_()
    y, h = mod(x, h0, lengths=lengths)
    gy, gh = torch.randn_like(y), torch.randn_like(h)  # a random loss weights everything
    params = list(mod.parameters())
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), [x, h0, *params])

    p = dict(mod.named_parameters())
    loss = x.new_zeros(())
    for b, n in enumerate(lengths.tolist()):
        yb, hb = ref(p, x[b : b + 1, :n], h0[b : b + 1])
        assert_close(y[b, :n], yb[0], f"outputs of sequence {b}")
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:])), "outputs past the length"
        assert_close(h[b], hb[0], f"final carry of sequence {b}")
        loss = loss + (yb * gy[b : b + 1, :n]).sum() + (hb * gh[b : b + 1]).sum()
    expected = torch.autograd.grad(loss, [x, h0, *params])
    names = ["x", "h0", *p]
    for name, g, e in zip(names, grads, expected, strict=True):
        assert_close(g, e, f"gradient of {name}")
    pad = torch.arange(t)[None, :] >= lengths[:, None]
    assert torch.equal(grads[0][pad], torch.zeros_like(grads[0][pad])), "padding gradient"


def test_without_lengths_nothing_changes() -> None:
    mod = make_cell("mingru", "chunked")
    x = torch.randn(B, 20, D, dtype=torch.float64)
    full = torch.full((B,), 20, dtype=torch.int64)
    y0, h0 = mod(x)
    y1, h1 = mod(x, lengths=full)
    assert torch.equal(y0, y1) and torch.equal(h0, h1)


# -- torch.nn's LSTM / GRU / RNN through rnn_forward ---------------------------------------------


NN = {
    "lstm": lambda: nn.LSTM(D, 5, num_layers=2, batch_first=True),
    "gru": lambda: nn.GRU(D, 5, batch_first=True, bidirectional=True),
    "rnn_relu": lambda: nn.RNN(D, 5, batch_first=True, nonlinearity="relu"),
}


def _flat(h: Any) -> torch.Tensor:
    """An LSTM's (h, c) or a GRU/RNN's h as one (L*dirs, B, 2H or H) tensor."""
    return torch.cat(h, -1) if isinstance(h, tuple) else h


@pytest.mark.parametrize("t", [1, 63])
@pytest.mark.parametrize("kind", list(NN))
def test_torch_rnn_batch_equals_each_sequence_alone(kind: str, t: int) -> None:
    mod = NN[kind]().double()
    lengths = lengths_for(t)
    x = padded_input(t, lengths).requires_grad_()
    with torch.no_grad():
        hshape = _flat(mod(x[:, :1])[1]).shape
    hx = torch.randn(*hshape[:-1], 5, dtype=torch.float64, requires_grad=True)
    cx = torch.randn_like(hx, requires_grad=True)
    h0 = (hx, cx) if kind == "lstm" else hx
    y, h = cells.rnn_forward(mod, x, h0, lengths)
    h = _flat(h)
    gy, gh = torch.randn_like(y), torch.randn_like(h)
    inputs = [x, hx, cx, *mod.parameters()]
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), inputs, allow_unused=True)

    loss = x.new_zeros(())
    for b, n in enumerate(lengths.tolist()):
        hb0 = (hx[:, b : b + 1], cx[:, b : b + 1]) if kind == "lstm" else hx[:, b : b + 1]
        yb, hb = mod(x[b : b + 1, :n], hb0)
        hb = _flat(hb)
        assert_close(y[b, :n], yb[0], f"outputs of sequence {b}")
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))
        assert_close(h[:, b], hb[:, 0], f"final carry of sequence {b}")
        loss = loss + (yb * gy[b : b + 1, :n]).sum() + (hb * gh[:, b : b + 1]).sum()
    expected = torch.autograd.grad(loss, inputs, allow_unused=True)
    for k, (g, e) in enumerate(zip(grads, expected, strict=True)):
        if e is None:  # cx of a GRU/RNN takes no part
            assert g is None
        else:
            assert_close(g, e, f"gradient of input {k}")


# -- compiled models --------------------------------------------------------------------------


MODEL_LAYERS: list[Any] = [
    {"lstm": {"hidden": 8}},
    {"residual": [{"norm": "rms"}, {"attention": {"heads": 2}}]},
    {"mingru": {"hidden": 8, "mode": "chunked"}},
    {"loop": {"steps": 2, "body": [{"residual": [{"gla": {"heads": 2, "mode": "chunked"}}]}]}},
    {"ssm": {"kind": "selective", "state": 3, "mode": "associative"}},
    {"mlp": {"mult": 2}},
]


def _prepared(layers: list[Any]) -> Any:
    model = archc.compile(spec_text(layers, d_model=8), seed=0).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("t", [1, 40])
def test_model_forward_with_lengths_equals_each_sequence_alone(t: int) -> None:
    model = _prepared(MODEL_LAYERS)
    lengths = lengths_for(t)
    x = padded_input(t, lengths).requires_grad_()
    y = model(x, lengths=lengths)
    gy = torch.randn_like(y)
    loss = x.new_zeros(())
    for b, n in enumerate(lengths.tolist()):
        yb = model(x[b : b + 1, :n])
        assert_close(y[b, :n], yb[0], f"outputs of sequence {b}")
        loss = loss + (yb * gy[b : b + 1, :n]).sum()
    # materialize: at T = 1 some weights (e.g. a GLA's decay gate) have no effect.
    ex, *ep = torch.autograd.grad(loss, [x, *model.parameters()], materialize_grads=True)
    # Past each length the model's outputs are not masked (an MLP of zeros gives its
    # bias), so gradients come from a loss over the valid positions only.
    valid = (torch.arange(t)[None, :] < lengths[:, None])[..., None]
    gx, *gp = torch.autograd.grad(
        (y * gy * valid).sum(), [x, *model.parameters()], materialize_grads=True
    )
    assert_close(gx, ex, "input gradient")
    for k, (g, e) in enumerate(zip(gp, ep, strict=True)):
        assert_close(g, e, f"parameter gradient {k}")


def test_model_state_with_lengths_is_each_sequences_carry() -> None:
    model = _prepared([{"lstm": {"hidden": 8}}, {"mingru": {"hidden": 8}}])
    lengths = lengths_for(12)
    x = padded_input(12, lengths)
    _, state = model(x, return_state=True, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        _, sb = model(x[b : b + 1, :n], return_state=True)
        assert_close(state["layers.1.mingru"][b], sb["layers.1.mingru"][0], "mingru carry")
        for part, ref in zip(state["layers.0.lstm"], sb["layers.0.lstm"], strict=True):
            assert_close(part[:, b], ref[:, 0], "lstm carry")


def test_emitted_model_takes_lengths(tmp_path: Any) -> None:
    import importlib.util

    from archc.backends.torch.emit import emit_torch

    model = _prepared(MODEL_LAYERS)
    path = tmp_path / "model.py"
    path.write_text(emit_torch(model.graph))
    spec = importlib.util.spec_from_file_location("varlen_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    standalone = module.Model().double().eval()
    standalone.load_state_dict(model.state_dict())
    lengths = lengths_for(20)
    x = padded_input(20, lengths)
    with torch.no_grad():
        assert_close(standalone(x, lengths=lengths), model(x, lengths=lengths), "model.py")
    assert "def valid_steps" in path.read_text()
