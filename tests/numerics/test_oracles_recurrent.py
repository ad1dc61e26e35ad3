"""Scan layers against torch's nn.LSTM/GRU/RNN (weights copied by name) and
float64 step-by-step recurrences.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from oracle_helpers import assert_close, spec_text
from torch import nn

import archc

RECURRENT = {
    "lstm": ({"lstm": {}}, nn.LSTM, {}),
    "gru": ({"gru": {}}, nn.GRU, {}),
    "rnn_tanh": ({"rnn": {"act": "tanh"}}, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": ({"rnn": {"act": "relu"}}, nn.RNN, {"nonlinearity": "relu"}),
}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(RECURRENT))
def test_recurrent_equals_torch(cell: str, bidirectional: bool, with_state: bool) -> None:
    layer, cls, kw = RECURRENT[cell]
    ((kind, extra),) = layer.items()
    params = {"hidden": 24, "layers": 2, "bidirectional": bidirectional, **extra}
    model = archc.compile(spec_text([{kind: params}], d_model=16), seed=3)
    ref = cls(16, 24, num_layers=2, batch_first=True, bidirectional=bidirectional, **kw)
    path = f"layers.0.{kind}"
    sd = model.state_dict()
    assert all(k.startswith(path + ".") for k in sd), list(sd)
    ref.load_state_dict({k.removeprefix(path + "."): v for k, v in sd.items()})  # strict

    x = torch.randn(3, 7, 16)
    init: Any = None
    if with_state:
        n = 2 * (2 if bidirectional else 1)
        h0 = torch.randn(n, 3, 24)
        init = (h0, torch.randn(n, 3, 24)) if cell == "lstm" else h0
    y, states = model(x, state=None if init is None else {path: init}, return_state=True)
    y_ref, s_ref = ref(x, init)
    assert y.shape == (3, 7, 24 * (2 if bidirectional else 1))
    assert_close(y, y_ref)
    assert set(states) == {path, "_pos"}  # "_pos": tokens seen, for continuing
    assert states["_pos"] == 7
    if cell == "lstm":
        h, c = states[path]
        assert_close(h, s_ref[0])
        assert_close(c, s_ref[1])
    else:
        assert_close(states[path], s_ref)
    # Without return_state the module returns the output alone.
    assert_close(model(x, state=None if init is None else {path: init}), y_ref)


def _lstm_f64(x: torch.Tensor, p: dict[str, torch.Tensor], hidden: int) -> tuple[Any, ...]:
    """One LSTM layer, step by step in float64 (gates i, f, g, o)."""
    b, t, _ = x.shape
    h = torch.zeros(b, hidden, dtype=torch.float64)
    c = torch.zeros(b, hidden, dtype=torch.float64)
    w_ih, w_hh = p["weight_ih_l0"].double(), p["weight_hh_l0"].double()
    bias = p["bias_ih_l0"].double() + p["bias_hh_l0"].double()
    ys = []
    for s in range(t):
        z = x[:, s].double() @ w_ih.T + h @ w_hh.T + bias
        i, f, g, o = z.split(hidden, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, 1), h, c


def _gru_f64(x: torch.Tensor, p: dict[str, torch.Tensor], hidden: int) -> tuple[Any, ...]:
    """One GRU layer, step by step in float64 (gates r, z, n; n sees r * (W_hn h + b_hn))."""
    b, t, _ = x.shape
    h = torch.zeros(b, hidden, dtype=torch.float64)
    w_ih, w_hh = p["weight_ih_l0"].double(), p["weight_hh_l0"].double()
    b_ih, b_hh = p["bias_ih_l0"].double(), p["bias_hh_l0"].double()
    ys = []
    for s in range(t):
        gi = x[:, s].double() @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        ir, iz, in_ = gi.split(hidden, dim=-1)
        hr, hz, hn = gh.split(hidden, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys, 1), h


def _rnn_f64(x: torch.Tensor, p: dict[str, torch.Tensor], act: str) -> tuple[Any, ...]:
    b, t, _ = x.shape
    hidden = p["weight_hh_l0"].shape[0]
    h = torch.zeros(b, hidden, dtype=torch.float64)
    fn = torch.tanh if act == "tanh" else torch.relu
    ys = []
    for s in range(t):
        h = fn(
            x[:, s].double() @ p["weight_ih_l0"].double().T
            + p["bias_ih_l0"].double()
            + h @ p["weight_hh_l0"].double().T
            + p["bias_hh_l0"].double()
        )
        ys.append(h)
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("cell", list(RECURRENT))
def test_single_layer_recurrence_equals_float64_steps(cell: str) -> None:
    layer, _, _ = RECURRENT[cell]
    ((kind, extra),) = layer.items()
    model = archc.compile(spec_text([{kind: {"hidden": 12, **extra}}], d_model=8), seed=5)
    p = {k.split(".")[-1]: v for k, v in model.state_dict().items()}
    x = torch.randn(2, 6, 8)
    y, states = model(x, return_state=True)
    final = states[f"layers.0.{kind}"]
    if cell == "lstm":
        y_ref, h_ref, c_ref = _lstm_f64(x, p, 12)
        assert_close(final[0][0], h_ref)
        assert_close(final[1][0], c_ref)
    elif cell == "gru":
        y_ref, h_ref = _gru_f64(x, p, 12)
        assert_close(final[0], h_ref)
    else:
        y_ref, h_ref = _rnn_f64(x, p, extra["act"])
        assert_close(final[0], h_ref)
    assert_close(y, y_ref)
