"""The cells of backends/torch/modules/cells.py (leaky RNN, minGRU, minLSTM, S4D, LRU,
selective SSM) against float64 step-by-step recurrences written here from the papers'
equations, independent of archc's code: outputs, final states and every parameter
gradient; decay extremes; every scan mode against sequential; streaming.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from oracle_helpers import check_layer_against_reference, run_in_chunks, spec_text

import archc
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError
from archc.ir.cost import model_cost

H, N, VOCAB = 60, 4, 7
REL = 1e-9  # float64 against float64: rounding only
Ref = Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def _sig(v: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def _softplus(v: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(v))


def _leaky(act: Callable[[torch.Tensor], torch.Tensor]) -> Ref:
    def ref(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tau = 1.0 + _softplus(p["tau_raw"])
        h = x.new_zeros(x.shape[0], H)
        ys = []
        for t in range(x.shape[1]):
            pre = x[:, t] @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias"]
            h = (1.0 - 1.0 / tau) * h + (1.0 / tau) * act(pre)
            ys.append(h)
        return torch.stack(ys, 1), h

    return ref


def _mingru(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    h = x.new_zeros(x.shape[0], H)
    ys = []
    for t in range(x.shape[1]):
        z = _sig(x[:, t] @ p["weight_z"].T + p["bias_z"])
        cand = x[:, t] @ p["weight_h"].T + p["bias_h"]
        h = (1.0 - z) * h + z * cand
        ys.append(h)
    return torch.stack(ys, 1), h


def _minlstm(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    h = x.new_zeros(x.shape[0], H)
    ys = []
    for t in range(x.shape[1]):
        f = _sig(x[:, t] @ p["weight_f"].T + p["bias_f"])
        i = _sig(x[:, t] @ p["weight_i"].T + p["bias_i"])
        cand = x[:, t] @ p["weight_h"].T + p["bias_h"]
        h = f / (f + i) * h + i / (f + i) * cand
        ys.append(h)
    return torch.stack(ys, 1), h


def _s4d(disc: str) -> Ref:
    def ref(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        a = -torch.exp(p["A_log"])
        dt = torch.exp(p["log_dt"])[:, None]
        if disc == "zoh":
            abar = torch.exp(dt * a)
            bbar = (abar - 1.0) / a * p["B"]
        else:
            abar = (1.0 + dt * a / 2.0) / (1.0 - dt * a / 2.0)
            bbar = dt * p["B"] / (1.0 - dt * a / 2.0)
        h = x.new_zeros(x.shape[0], H, N)
        ys = []
        for t in range(x.shape[1]):
            h = abar * h + bbar * x[:, t, :, None]
            ys.append((p["C"] * h).sum(-1) + p["D"] * x[:, t])
        return torch.stack(ys, 1), h

    return ref


def _lru(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    # Complex128 arithmetic here; archc keeps real/imaginary parts apart.
    lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
    gamma = torch.sqrt(1.0 - lam.abs() ** 2)
    b = torch.complex(p["B_re"], p["B_im"]) * gamma
    c = torch.complex(p["C_re"], p["C_im"])
    h = torch.zeros(x.shape[0], H, N, dtype=torch.complex128)
    ys = []
    for t in range(x.shape[1]):
        h = lam * h + b * x[:, t, :, None]
        ys.append((c * h).sum(-1).real + p["D"] * x[:, t])
    return torch.stack(ys, 1), torch.stack([h.real, h.imag], -1)


def _selective(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    a = -torch.exp(p["A_log"])
    h = x.new_zeros(x.shape[0], H, N)
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        dt = _softplus(xt @ p["dt_weight"].T + p["dt_bias"])  # (B, D)
        bt, ct = xt @ p["B_weight"].T, xt @ p["C_weight"].T  # (B, N)
        h = torch.exp(dt[:, :, None] * a) * h + (dt * xt)[:, :, None] * bt[:, None, :]
        ys.append((h * ct[:, None, :]).sum(-1) + p["D"] * xt)
    return torch.stack(ys, 1), h


# id -> (layer, reference, modes besides sequential)
LINEAR_MODES = ("associative", "chunked", "auto")
CELLS: dict[str, tuple[dict[str, Any], Ref, tuple[str, ...]]] = {
    "leaky_tanh": ({"rnn": {"hidden": H, "act": "leaky"}}, _leaky(torch.tanh), ("auto",)),
    "leaky_relu": (
        {"rnn": {"hidden": H, "act": "leaky", "nonlinearity": "relu"}},
        _leaky(torch.relu),
        ("auto",),
    ),
    "mingru": ({"mingru": {"hidden": H}}, _mingru, LINEAR_MODES),
    "minlstm": ({"minlstm": {"hidden": H}}, _minlstm, LINEAR_MODES),
    "s4d_zoh": ({"ssm": {"kind": "s4d", "state": N}}, _s4d("zoh"), LINEAR_MODES),
    "s4d_bilinear": (
        {"ssm": {"kind": "s4d", "state": N, "disc": "bilinear"}},
        _s4d("bilinear"),
        LINEAR_MODES,
    ),
    "lru": ({"ssm": {"kind": "lru", "state": N}}, _lru, ("auto",)),
    "selective": ({"ssm": {"kind": "selective", "state": N}}, _selective, LINEAR_MODES),
}


def _layer(cell: str, mode: str | None = None) -> dict[str, Any]:
    ((kind, params),) = CELLS[cell][0].items()
    return {kind: {**params, **({"mode": mode} if mode else {})}}


def _model(cell: str, mode: str | None = "sequential", seed: int = 0) -> Any:
    layers = ["embed", _layer(cell, mode), {"head": {"out": 5}}]
    model = archc.compile(spec_text(layers, d_model=H, vocab=VOCAB), seed=seed).double()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".tau_raw" in name or "_log" in name or "dt_bias" in name:
                continue  # keep the initialised (stable) decay rates
            # A contracting W_hh (spectral radius < 1): chaotic dynamics would amplify
            # rounding beyond the float64 tolerance at T=257.
            p.normal_(0.0, 0.5 / math.sqrt(H) if "weight_hh" in name else 0.3)
    return model


def _cell_path(cell: str) -> str:
    return f"layers.1.{next(iter(CELLS[cell][0]))}"


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    # The floor: a gradient that is exactly 0 in one and rounding noise in the other.
    return rel_rms(a, b, floor=1e-6)


def _check_against_reference(cell: str, model: Any, t: int) -> None:
    check_layer_against_reference(model, _cell_path(cell), CELLS[cell][1], VOCAB, t, REL)


@pytest.mark.parametrize("t", [1, 63, 257])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_equals_float64_reference(cell: str, t: int) -> None:
    _check_against_reference(cell, _model(cell), t)


def _scale_decays(model: Any, scale: float) -> None:
    """Decay rates (A, nu, dt) times `scale`; tau_raw, dt_bias and the cell's input
    weights (gate pre-activations) times `scale`."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "nu_log", "log_dt")):
                p.add_(math.log(scale))
            elif name.endswith(("tau_raw", "dt_bias")) or (
                name.startswith("layers.1.") and ".weight_" in name and "_hh" not in name
            ):
                p.mul_(scale)


@pytest.mark.parametrize("scale", [0.1, 10.0])
@pytest.mark.parametrize("cell", list(CELLS))
def test_decay_extremes_stay_finite_and_exact(cell: str, scale: float) -> None:
    model = _model(cell)
    _scale_decays(model, scale)
    _check_against_reference(cell, model, 63)


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_mode_equals_sequential(cell: str) -> None:
    pytest.importorskip("archc.backends.torch.scans.linear")
    seq = _model(cell)
    ids = torch.randint(0, VOCAB, (2, 257))
    y_seq = seq(ids)
    y_seq.square().sum().backward()
    for mode in CELLS[cell][2]:
        other = _model(cell, mode)
        other.load_state_dict(seq.state_dict())
        y = other(ids)
        assert _rel_rms(y.detach(), y_seq.detach()) < REL, mode
        y.square().sum().backward()
        for (name, p), q in zip(other.named_parameters(), seq.parameters(), strict=True):
            assert _rel_rms(p.grad, q.grad) < 1e-8, (mode, name)


@pytest.mark.parametrize("mode", ["sequential", "auto"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_streaming_equals_full(cell: str, mode: str) -> None:
    model = _model(cell, mode).eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        full, final = model(ids, return_state=True)
        streamed, state = run_in_chunks(model, ids, (1, 3, 17, 1, 18))
    assert (streamed - full).abs().max() < 1e-10
    path = _cell_path(cell)
    assert (state[path] - final[path]).abs().max() < 1e-10


def test_tau_stays_at_least_one() -> None:
    model = _model("leaky_tanh")
    cell = model.get_submodule(_cell_path("leaky_tanh"))
    opt = torch.optim.SGD(model.parameters(), lr=1e4)
    (cell.tau().sum()).backward()  # a huge step towards tau < 1
    opt.step()
    tau = 1.0 + _softplus(cell.tau_raw.detach())
    assert torch.isfinite(tau).all() and (tau >= 1.0).all()
    y = model(torch.randint(0, VOCAB, (2, 9)))
    assert torch.isfinite(y).all()


def test_decay_rates_have_no_weight_decay_and_costs_are_counted() -> None:
    layers = [
        "embed",
        {"rnn": {"hidden": H, "act": "leaky"}},
        {"ssm": {"kind": "selective", "state": N}},
        {"ssm": {"kind": "lru", "state": N}},
    ]
    graph = archc.to_graph(spec_text(layers, d_model=H, vocab=VOCAB))
    flags = {f"{n.path}.{p.name}": p.decay for n in graph.walk() for p in n.params}
    for name in ("tau_raw", "A_log", "dt_bias", "nu_log", "theta_log"):
        assert not any(v for k, v in flags.items() if k.endswith("." + name)), name
    cost = model_cost(graph, 64)
    assert cost.state_bytes_per_sequence == 4 * (H + H * N + 2 * H * N)
    assert cost.forward_flops_per_token > 2 * H * (H + H)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"mingru": {"mode": "newton"}}, "reserved"),
        ({"ssm": {"kind": "lru", "mode": "chunked"}}, "not linear"),
        ({"rnn": {"act": "leaky", "mode": "associative"}}, "not linear"),
        ({"rnn": {"act": "leaky", "layers": 2}}, "one layer"),
        ({"ssm": {"hidden": 8}}, "keeps the width"),
        ({"ssm": {"kind": "lru", "disc": "bilinear"}}, "s4d only"),
    ],
)
def test_bad_cell_settings_are_spec_errors(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError, match=message):
        archc.compile(spec_text(["embed", layer], d_model=16, vocab=VOCAB))
