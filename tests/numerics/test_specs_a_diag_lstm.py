"""The diagonal LSTM (ParaLSTM, `lstm: {recurrent: diagonal}`) against a float64
step-by-step reference written from its equations, Newton against the exact loop
(values and gradients), its Jacobian blocks against autograd, causality, varlen and
streaming, and its located user errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from oracle_helpers import assert_located_error, run_in_chunks, spec_text

import archc

D, H = 6, 8
P = "layers.0.lstm."


def _model(mode: str, seed: int = 0, **extra: object) -> torch.nn.Module:
    layer = {"lstm": {"hidden": H, "recurrent": "diagonal", "mode": mode, **extra}}
    model = archc.compile(spec_text([layer], d_model=D), seed=seed)
    with torch.no_grad():  # biases start at zero: give every term a value
        model.state_dict()[f"{P}bias"].uniform_(-0.5, 0.5)
    return model


def _reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ParaLSTM one step at a time in float64, gates [i, f, g, o]:
    i, f, o = sigmoid(W x + u * h + b), g = tanh(...), c = f c + i g, h = o tanh(c)."""
    w, u, b = (sd[f"{P}{n}"].double() for n in ("weight_ih", "weight_hh", "bias"))
    x = x.double()
    c = torch.zeros(x.shape[0], H, dtype=torch.float64)
    h = torch.zeros_like(c)
    sig = lambda z: 1.0 / (1.0 + torch.exp(-z))  # noqa: E731
    out = []
    for t in range(x.shape[1]):
        pre = [
            x[:, t] @ w[k * H : (k + 1) * H].T + u[k] * h + b[k * H : (k + 1) * H] for k in range(4)
        ]
        i, f, g, o = sig(pre[0]), sig(pre[1]), torch.tanh(pre[2]), sig(pre[3])
        c = f * c + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("mode", ["sequential", "newton"])
def test_diag_lstm_equals_float64_reference(mode: str) -> None:
    model = _model(mode).double()
    x = torch.randn(3, 17, D, dtype=torch.float64)
    ref = _reference(model.state_dict(), x)
    assert (model(x) - ref).abs().max().item() < 1e-9


def test_newton_equals_sequential_values_and_gradients() -> None:
    seq, newt = _model("sequential").double(), _model("newton").double()
    newt.load_state_dict(seq.state_dict())
    x = torch.randn(2, 40, D, dtype=torch.float64)
    xs, xn = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yn = seq(xs), newt(xn)
    assert (ys - yn).abs().max().item() < 1e-9
    g = torch.randn_like(ys)
    (ys * g).sum().backward()
    (yn * g).sum().backward()
    assert (xs.grad - xn.grad).abs().max().item() < 1e-8
    for (name, ps), pn in zip(seq.named_parameters(), newt.parameters(), strict=True):
        assert (ps.grad - pn.grad).abs().max().item() < 1e-8, name


def test_jacobian_blocks_equal_autograd() -> None:
    model = _model("sequential").double()
    mod = next(m for m in model.modules() if type(m).__name__ == "DiagLSTM")
    xp = torch.randn(4 * H, dtype=torch.float64)
    c0, h0 = torch.randn(H, dtype=torch.float64), torch.randn(H, dtype=torch.float64)

    def f(s: torch.Tensor) -> torch.Tensor:
        c, h = mod.cell(xp, s[:H], s[H:])
        return torch.cat([c, h])

    full = torch.autograd.functional.jacobian(f, torch.cat([c0, h0]))  # (2H, 2H)
    blocks = mod.blocks(xp, c0, h0)  # (H, 2, 2)
    for j in range(H):
        want = full[[j, H + j]][:, [j, H + j]]
        assert torch.allclose(blocks[j], want, atol=1e-12)
    # Units do not interact: everything off the 2 x 2 blocks is zero.
    mask = torch.zeros(2 * H, 2 * H, dtype=torch.bool)
    for j in range(H):
        for r in (j, H + j):
            mask[r, j] = mask[r, H + j] = True
    assert full[~mask].abs().max().item() == 0.0


def test_newton_is_causal() -> None:
    model = _model("newton")
    x = torch.randn(1, 20, D)
    y = model(x)
    x2 = x.clone()
    x2[:, 9] += 1.0
    y2 = model(x2)
    assert torch.allclose(y[:, :9], y2[:, :9], atol=1e-6)
    assert not torch.allclose(y[:, 9:], y2[:, 9:], atol=1e-4)


@pytest.mark.parametrize("mode", ["sequential", "newton"])
def test_varlen_matches_each_sequence_alone(mode: str) -> None:
    model = _model(mode).double()
    x = torch.randn(2, 12, D, dtype=torch.float64)
    lengths = torch.tensor([12, 7])
    y = model(x, lengths=lengths)
    alone = model(x[1:, :7])
    assert (y[1, :7] - alone[0]).abs().max().item() < 1e-9
    assert y[1, 7:].abs().max().item() == 0.0


def test_streaming_in_pieces_equals_full() -> None:
    model = _model("newton").double()
    x = torch.randn(2, 13, D, dtype=torch.float64)
    full = model(x)
    y, state = run_in_chunks(model, x, (5, 1, 7))
    assert (y - full).abs().max().item() < 1e-9
    carry = next(v for k, v in state.items() if not k.startswith("_"))  # skip '_pos'
    assert carry.shape == (2, H, 2)
    assert (carry[..., 1] - full[:, -1]).abs().max().item() < 1e-9  # [..., 1] is h


def test_parameter_count() -> None:
    n = sum(p.numel() for p in _model("newton").parameters())
    assert n == 4 * H * D + 4 * H + 4 * H


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ("{hidden: 8, newton_iters: 4}", "newton_iters", "applies to recurrent: diagonal only"),
        ("{hidden: 8, recurrent: diagonal, layers: 2}", "layers", "has one layer"),
        ("{hidden: 8, mode: chunked, recurrent: diagonal}", "mode", "mode 'chunked'"),
    ],
)
def test_invalid_combinations_are_located_errors(
    params: str, key: str, message: str, tmp_path: Path
) -> None:
    assert_located_error(tmp_path, 8, "lstm", params, key, message)
