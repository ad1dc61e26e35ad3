"""Custom cells written in the spec (`cell:` with let/update/output expressions).

Oracles: torch.nn.RNN with copied weights for an Elman cell; a float64 step loop written
here by hand for a GRU-like cell; per-sequence runs for right-padded batches; the
sequential loop for Newton mode and the full-sequence call for streaming; the compiled
model for the standalone model.py run in a fresh process that cannot import archc.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from oracle_helpers import max_err, randomize, spec_text
from torch import nn

import archc
from archc.cli import run
from archc.frontend.cell_expr import canon, parse

B, T, D, H = 3, 7, 5, 6
TIGHT = 1e-10


def _cell(**cell: Any) -> list[Any]:
    return [{"cell": cell}]


def _compile(layers: list[Any], d_model: int = D) -> nn.Module:
    model = archc.compile(archc.load(spec_text(layers, d_model=d_model)))
    return model.double()


ELMAN = _cell(state={"h": H}, update={"h": f"tanh(linear(x, {H}) + linear(h, {H}))"}, output="h")
GRU_LIKE = _cell(
    state={"h": H},
    let={
        "z": f"sigmoid(linear(x, {H}) + linear(h, {H}, bias=false))",
        "r": f"sigmoid(linear(x, {H}) + diag(h))",
        "c": f"tanh(linear(x, {H}) + linear(r * h, {H}, bias=false) + param({H}))",
        "x2": f"linear(x, {H}, bias=false)",
    },
    update={"h": "(1 - z) * h + z * c"},
    output="-h / 2 + 0.5 * x2",
)
# Two state entries, each updated elementwise from itself: a diagonal Jacobian.
DIAGONAL = _cell(
    state={"h": H, "g": H},
    let={"a": f"sigmoid(linear(x, {H}))"},
    update={
        "h": f"a * h + (1 - a) * tanh(linear(x, {H}) + diag(h))",
        "g": "0.5 * g + softplus(diag(g) * a) - 0.5",
    },
    output="h * g + h",
    mode="newton",
)


def test_elman_cell_equals_nn_rnn() -> None:
    model = _compile(ELMAN)
    cell = model.get_submodule("layers.0.cell")
    rnn = nn.RNN(D, H, batch_first=True).double()
    with torch.no_grad():
        cell.update_h_linear0_weight.copy_(rnn.weight_ih_l0)
        cell.update_h_linear0_bias.copy_(rnn.bias_ih_l0)
        cell.update_h_linear1_weight.copy_(rnn.weight_hh_l0)
        cell.update_h_linear1_bias.copy_(rnn.bias_hh_l0)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64)
    y, (h,) = cell(x, (h0,))
    y_ref, h_ref = rnn(x, h0[None])
    assert max_err(y, y_ref) <= TIGHT and max_err(h, h_ref[0]) <= TIGHT
    w = torch.randn_like(y)
    ours = torch.autograd.grad((y * w).sum() + h.sum(), [x, *cell.parameters()])
    ref = torch.autograd.grad(
        (y_ref * w).sum() + h_ref.sum(),
        [x, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0],
    )
    for a, b in zip(ours, ref, strict=True):
        assert max_err(a, b) <= TIGHT


def test_gru_like_cell_equals_hand_loop() -> None:
    model = _compile(GRU_LIKE)
    randomize(model, 0.4)
    p = dict(model.get_submodule("layers.0.cell").named_parameters())
    x = torch.randn(B, T, D, dtype=torch.float64)
    h = torch.zeros(B, H, dtype=torch.float64)
    ys = []
    for t in range(T):
        xt = x[:, t]

        def lin(name: str, v: torch.Tensor) -> torch.Tensor:
            out = v @ p[f"{name}_weight"].T
            return out + p[f"{name}_bias"] if f"{name}_bias" in p else out

        z = torch.sigmoid(lin("let_z_linear0", xt) + lin("let_z_linear1", h))
        r = torch.sigmoid(lin("let_r_linear0", xt) + p["let_r_diag0_weight"] * h)
        c = torch.tanh(
            lin("let_c_linear0", xt) + lin("let_c_linear1", r * h) + p["let_c_param0_weight"]
        )
        h = (1 - z) * h + z * c
        ys.append(-h / 2 + 0.5 * lin("let_x2_linear0", xt))
    with torch.no_grad():
        y = model(x)
    assert max_err(y, torch.stack(ys, 1)) <= TIGHT


def _diag_cell(mode: str) -> nn.Module:
    model = _compile(DIAGONAL)
    randomize(model, 0.5)
    cell = model.get_submodule("layers.0.cell")
    cell.mode = mode
    return cell


def test_newton_mode_equals_sequential() -> None:
    torch.manual_seed(0)
    seq = _diag_cell("sequential")
    newton = _diag_cell("newton")
    newton.load_state_dict(seq.state_dict())
    newton.tol = 1e-12
    x = torch.randn(B, 33, D, dtype=torch.float64, requires_grad=True)
    y1, c1 = seq(x)
    y2, c2 = newton(x)
    assert max_err(y1, y2) <= 1e-8
    for a, b in zip(c1, c2, strict=True):
        assert max_err(a, b) <= 1e-8
    g1 = torch.autograd.grad(y1.square().sum(), [x, *seq.parameters()])
    g2 = torch.autograd.grad(y2.square().sum(), [x, *newton.parameters()])
    for a, b in zip(g1, g2, strict=True):
        assert max_err(a, b) <= 1e-7


def test_varlen_equals_per_sequence_runs() -> None:
    lengths = torch.tensor([7, 3, 1])
    x = torch.randn(B, T, D, dtype=torch.float64)
    for mode in ("sequential", "newton"):
        cell = _diag_cell(mode)
        cell.tol = 1e-12
        with torch.no_grad():
            y, carry = cell(x, lengths=lengths)
            for b, n in enumerate(lengths.tolist()):
                yb, cb = cell(x[b : b + 1, :n])
                assert max_err(y[b : b + 1, :n], yb) <= 1e-9, mode
                assert torch.all(y[b, n:] == 0), mode
                for a, c in zip(carry, cb, strict=True):
                    assert max_err(a[b : b + 1], c) <= 1e-9, mode


def test_streaming_equals_full() -> None:
    for layers in (GRU_LIKE, DIAGONAL):
        layers = [{"embed": {}}, *layers, {"head": {}}]
        model = archc.compile(archc.load(spec_text(layers, d_model=D, vocab=11)))
        randomize(model, 0.3)
        model = model.double().eval()
        x = torch.randint(0, 11, (2, 9))
        with torch.no_grad():
            full = model(x)
            ys, state = [], None
            for i in range(0, 9, 2):
                y, state = model(x[:, i : i + 2], state=state, return_state=True)
                ys.append(y)
        assert max_err(torch.cat(ys, 1), full) <= 1e-9


_RUNNER = """
import sys
sys.modules["archc"] = None  # any 'import archc' in model.py now raises ImportError
import torch
from model import Model
model = Model()
model.load_state_dict(torch.load("state.pt"))
with torch.no_grad():
    torch.save(model.eval()(torch.load("x.pt")), "y.pt")
"""


def test_emitted_model_runs_in_fresh_process(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parents[2] / "specs" / "custom-cell.yaml"
    msgs: list[str] = []
    out = tmp_path / "model.py"
    assert run(["compile", str(spec), "--emit", "torch", "-o", str(out)], handler=msgs.append) == 0
    assert "def _cell_step_layers_1_cell(" in out.read_text()
    model = archc.compile(spec, seed=3).eval()
    x = torch.randint(0, 2, (2, 12))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", _RUNNER], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    with torch.no_grad():
        assert max_err(torch.load(tmp_path / "y.pt"), model(x)) <= 1e-6


def test_canonical_text_reparses_to_the_same_tree() -> None:
    cases = {
        "(a - b) - c": "a - b - c",
        "a - (b - c)": "a - (b - c)",
        "a / (b * c)": "a / (b * c)",
        "-(a + b) * 2": "-(a + b) * 2",
        "2 * -h": "2 * -h",
        "linear(x, 4, bias=true)": "linear(x, 4)",
        "linear( x ,4,bias=false )": "linear(x, 4, bias=false)",
        "1.50e-3 * h": "0.0015 * h",
    }
    for text, expected in cases.items():
        tree = parse(text)
        assert canon(tree) == expected
        assert canon(parse(canon(tree))) == expected
