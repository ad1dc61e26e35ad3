"""The `gate` component, act(W_u x + b_u) * body(W_v x + b_v), against hand-written
references: torch's F.glu (S4D's output GLU) and a MossFormer2 GCU around a causal FIR
filter (an FSMN memory block) written with explicit shifts; causality; located errors."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from oracle_helpers import assert_close, randomize, spec_text

import archc
from archc.cli import run

D = 12
P = "layers.0.gate."


def test_sigmoid_gate_with_identity_body_is_glu() -> None:
    spec = spec_text([{"gate": {"act": "sigmoid", "body": [{"act": "identity"}]}}], d_model=D)
    model = archc.compile(spec, seed=0)
    randomize(model)
    sd = model.state_dict()
    x = torch.randn(2, 7, D)
    # F.glu(a, b) = a * sigmoid(b) on the halves of one (B, T, 2D) projection.
    w = torch.cat([sd[f"{P}v.weight"], sd[f"{P}u.weight"]])
    b = torch.cat([sd[f"{P}v.bias"], sd[f"{P}u.bias"]])
    assert_close(model(x), F.glu(x @ w.T + b, dim=-1))


def _fir(v: torch.Tensor, taps: torch.Tensor, dilation: int) -> torch.Tensor:
    """v_t + sum_i taps[:, i] * v_{t - (K-1-i) d}: a causal per-channel FIR filter."""
    k = taps.shape[1]
    out = v.clone()
    for i in range(k):
        lag = (k - 1 - i) * dilation
        shifted = torch.zeros_like(v)
        shifted[:, lag:] = v[:, : v.shape[1] - lag]
        out = out + taps[:, i] * shifted
    return out


def test_gcu_with_fsmn_memory_equals_reference() -> None:
    body = [{"residual": [{"conv1d": {"kernel": 3, "dilation": 2, "groups": "depthwise",
                                      "causal": True, "bias": False}}]}]  # fmt: skip
    spec = spec_text([{"gate": {"hidden": 8, "act": "silu", "body": body}}], d_model=D)
    model = archc.compile(spec, seed=1)
    randomize(model)
    sd = model.state_dict()
    taps = next(v for k, v in sd.items() if k.endswith("conv1d.weight")).squeeze(1)  # (8, 3)
    x = torch.randn(2, 11, D)
    u = F.silu(x @ sd[f"{P}u.weight"].T + sd[f"{P}u.bias"])
    v = x @ sd[f"{P}v.weight"].T + sd[f"{P}v.bias"]
    assert_close(model(x), u * _fir(v, taps, 2))
    # Causal: a change at t = 6 leaves every earlier output as it was.
    x2 = x.clone()
    x2[:, 6] += 1.0
    y, y2 = model(x), model(x2)
    assert torch.equal(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6], y2[:, 6])


def test_gate_body_must_keep_the_width(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model: bad\nd_model: 16\nlayers:\n  - gate: {hidden: 8, body: [{linear: 4}]}\n"
    )
    lines: list[str] = []
    assert run(["check", str(path)], handler=lines.append) == 2
    text = "\n".join(lines)
    assert f"{path}:4:5: error: gate body changes the width from 8 to 4" in text, text
