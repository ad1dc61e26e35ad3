"""Single layers and loops against formulas: conv1d (F.conv1d with explicit
padding), norms, activations, MLPs, and looped bodies with tied / untied weights.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from oracle_helpers import assert_close, max_err, randomize, spec_text
from torch import nn

import archc
from archc.ir.cost import model_cost

CONV = {
    "k3": {"kernel": 3},
    "k3_dil2": {"kernel": 3, "dilation": 2},
    "k4_depthwise": {"kernel": 4, "groups": "depthwise"},
    "k3_depthwise_dil3": {"kernel": 3, "groups": "depthwise", "dilation": 3},
    "depthwise_mult2": {"kernel": 2, "groups": "depthwise", "out": 16},
    "groups2_out12": {"kernel": 2, "groups": 2, "out": 12},
    "k3_nobias": {"kernel": 3, "bias": False},
    "k1": {"kernel": 1},
    "k3_noncausal": {"kernel": 3, "causal": False},
    "k4_noncausal_dil2": {"kernel": 4, "causal": False, "dilation": 2},
    "k4_depthwise_noncausal": {"kernel": 4, "causal": False, "groups": "depthwise"},
}


def ref_conv(x: torch.Tensor, p: dict[str, Any], w: torch.Tensor, b: torch.Tensor | None):
    """(B, T, D) -> (B, T, out) with F.conv1d; causal pads dilation*(kernel-1) on the left."""
    d = x.shape[-1]
    groups = d if p.get("groups") == "depthwise" else p.get("groups", 1)
    dil = p.get("dilation", 1)
    h = x.transpose(1, 2)
    if p.get("causal", True):
        h = F.pad(h, (dil * (p["kernel"] - 1), 0))
        y = F.conv1d(h, w, b, dilation=dil, groups=groups)
    else:
        y = F.conv1d(h, w, b, padding="same", dilation=dil, groups=groups)
    return y.transpose(1, 2)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("name", list(CONV))
def test_conv1d_equals_reference(name: str) -> None:
    p = CONV[name]
    model = archc.compile(spec_text([{"conv1d": p}], d_model=8), seed=6)
    randomize(model)
    sd = model.state_dict()
    assert set(sd) == {"layers.0.conv1d.weight"} | (
        {"layers.0.conv1d.bias"} if p.get("bias", True) else set()
    )
    w = sd["layers.0.conv1d.weight"]
    d_in, groups = 8, 8 if p.get("groups") == "depthwise" else p.get("groups", 1)
    assert w.shape == (p.get("out", 8), d_in // groups, p["kernel"])
    x = torch.randn(2, 13, 8)
    assert_close(model(x), ref_conv(x, p, w, sd.get("layers.0.conv1d.bias")))


@pytest.mark.parametrize("name", [n for n, p in CONV.items() if p.get("causal", True)])
def test_conv1d_is_causal(name: str) -> None:
    model = archc.compile(spec_text([{"conv1d": CONV[name]}], d_model=8), seed=6)
    x = torch.randn(1, 12, 8)
    for t in (0, 5, 10):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(1, 12 - t - 1, 8)
        assert max_err(model(x)[:, : t + 1], model(x2)[:, : t + 1]) == 0.0


# -- norms, activations, MLPs --------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_equals_formula(kind: str, affine: bool) -> None:
    eps = 1e-3
    model = archc.compile(
        spec_text([{"norm": {"kind": kind, "eps": eps, "affine": affine}}], d_model=12)
    )
    randomize(model)
    sd = model.state_dict()
    x = torch.randn(2, 5, 12) * 3 + 0.5
    if kind == "rms":
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    else:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + eps)
    if affine:
        y = y * sd["layers.0.norm.weight"]
        if kind == "layer":
            y = y + sd["layers.0.norm.bias"]
    else:
        assert not sd
    assert_close(model(x), y)


ACTS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("fn", list(ACTS))
def test_activation_equals_formula(fn: str) -> None:
    model = archc.compile(spec_text([{"act": fn}], d_model=8))
    x = torch.randn(2, 5, 8) * 2
    assert_close(model(x), ACTS[fn](x))


MLPS = {
    "gelu": {"mult": 4, "act": "gelu"},
    "relu_hidden20": {"hidden": 20, "act": "relu"},
    "silu_nobias": {"mult": 2, "act": "silu", "bias": False},
    "gelu_tanh_mult1.5": {"mult": 1.5, "act": "gelu_tanh"},
    "swiglu": {"mult": 2, "act": "swiglu"},
    "swiglu_nobias_hidden24": {"hidden": 24, "act": "swiglu", "bias": False},
    "geglu": {"mult": 2, "act": "geglu"},
    "reglu": {"mult": 2, "act": "reglu"},
}
_GATE_ACT = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}


@pytest.mark.parametrize("name", list(MLPS))
def test_mlp_equals_formula(name: str) -> None:
    p = MLPS[name]
    d = 12
    model = archc.compile(spec_text([{"mlp": p}], d_model=d))
    randomize(model)
    sd = {k.removeprefix("layers.0.mlp."): v for k, v in model.state_dict().items()}
    hidden = p.get("hidden") or round(p["mult"] * d)
    bias = p.get("bias", True)
    names = {"up", "down"} | ({"gate"} if p["act"] in _GATE_ACT else set())
    assert set(sd) == {
        f"{n}.{w}" for n in names for w in (("weight", "bias") if bias else ("weight",))
    }
    assert sd["up.weight"].shape == (hidden, d) and sd["down.weight"].shape == (d, hidden)

    def lin(x: torch.Tensor, n: str) -> torch.Tensor:
        y = x @ sd[f"{n}.weight"].T
        return y + sd[f"{n}.bias"] if bias else y

    x = torch.randn(2, 5, d)
    if p["act"] in _GATE_ACT:
        h = ACTS[_GATE_ACT[p["act"]]](lin(x, "gate")) * lin(x, "up")
    else:
        h = ACTS[p["act"]](lin(x, "up"))
    assert_close(model(x), lin(h, "down"))


# -- loops ---------------------------------------------------------------------------------------

LOOP_BODY = [{"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]}]


class RefBody(nn.Module):
    """x + down(gelu(up(rmsnorm(x)))) by hand."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(d))
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * self.norm_weight
        return x + self.down(ACTS["gelu"](self.up(h)))


def _body_from(model: nn.Module, copy: int, d: int) -> RefBody:
    sd = model.state_dict()
    pre = f"layers.0.loop.{copy}.0.residual."
    body = RefBody(d)
    body.load_state_dict(
        {
            "norm_weight": sd[pre + "0.norm.weight"],
            "up.weight": sd[pre + "1.mlp.up.weight"],
            "up.bias": sd[pre + "1.mlp.up.bias"],
            "down.weight": sd[pre + "1.mlp.down.weight"],
            "down.bias": sd[pre + "1.mlp.down.bias"],
        }
    )
    return body


# (tie, steps, distinct copies, which copy runs at each step)
LOOPS = {
    "all": ("all", 4, 1, [0, 0, 0, 0]),
    "none": ("none", 4, 4, [0, 1, 2, 3]),
    "cycle2": ("cycle(2)", 4, 2, [0, 1, 0, 1]),
    "cycle3_steps4": ("cycle(3)", 4, 3, [0, 1, 2, 0]),
    "cycle8_steps3": ("cycle(8)", 3, 3, [0, 1, 2]),
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_tying_parameters_and_output(name: str) -> None:
    tie, steps, copies, schedule = LOOPS[name]
    d = 16
    text = spec_text([{"loop": {"steps": steps, "tie": tie, "body": LOOP_BODY}}], d_model=d)
    model = archc.compile(text, seed=8)
    randomize(model)
    body_params = sum(p.numel() for p in RefBody(d).parameters())
    assert sum(p.numel() for p in model.parameters()) == copies * body_params
    assert model_cost(archc.to_graph(text), 16).parameters == copies * body_params
    bodies = [_body_from(model, c, d) for c in range(copies)]
    x = torch.randn(2, 5, d)
    y = x
    for c in schedule:
        y = bodies[c](y)
    assert_close(model(x), y)


def test_loop_tie_all_is_the_same_body_applied_steps_times() -> None:
    d = 16
    model = archc.compile(spec_text([{"loop": {"steps": 4, "body": LOOP_BODY}}], d_model=d), seed=9)
    randomize(model)
    body = _body_from(model, 0, d)
    x = torch.randn(2, 5, d)
    assert_close(model(x), body(body(body(body(x)))))
    # One step of the loop is not the answer: the loop really runs 4 times.
    assert max_err(model(x), body(x)) > 1e-3
