"""SortedNet nested sub-networks (`nested:`): a sub-network of width fraction w and depth d
equals a hand-built smaller network (nn.RMSNorm + nn.Linear modules) holding the leading
w * hidden units and the first d blocks of the weights; training samples one per forward
from the torch global RNG, evaluation runs a fixed one and draws nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import archc
from archc.cli import run

D, H, LAYERS = 6, 8, 3


def _model(tmp_path: Path, **params: object) -> archc.CompiledModel:  # type: ignore[name-defined]
    spec = {
        "model": "sorted",
        "d_model": D,
        "layers": [
            {"nested": {"layers": LAYERS, "hidden": H, "act": "silu", **params}},
        ],
    }
    path = tmp_path / "sorted.yaml"
    path.write_text(yaml.safe_dump(spec))
    model = archc.compile(path, seed=0).double()
    with torch.no_grad():  # biases start at zero: make them matter
        for name, p in model.named_parameters():
            if "b_" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _stack(model: nn.Module) -> nn.Module:
    return model.get_submodule("layers.0.nested")


def _hand(model: nn.Module, width: float, depth: int) -> nn.Sequential:
    """The sub-network as separate torch modules with sliced copies of the weights."""
    m = _stack(model)
    h = round(width * H)

    class Block(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            self.norm = nn.RMSNorm(D, eps=1e-5).double()
            self.up = nn.Linear(D, h).double()
            self.down = nn.Linear(h, D).double()
            with torch.no_grad():
                self.norm.weight.copy_(m.norm_weight[i])
                self.up.weight.copy_(m.w_up[i, :h])
                self.up.bias.copy_(m.b_up[i, :h])
                self.down.weight.copy_(m.w_down[i, :, :h])
                self.down.bias.copy_(m.b_down[i])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.down(F.silu(self.up(self.norm(x))))

    return nn.Sequential(*(Block(i) for i in range(depth)))


@pytest.mark.parametrize(("width", "depth"), [(1.0, 3), (0.5, 2), (0.25, 1), (0.75, 3)])
def test_sub_network_equals_hand_built_smaller_network(
    tmp_path: Path, width: float, depth: int
) -> None:
    model = _model(tmp_path, widths=[0.25, 0.5, 0.75, 1.0]).eval()
    _stack(model).choose(width, depth)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    torch.testing.assert_close(model(x), _hand(model, width, depth)(x), rtol=1e-12, atol=1e-12)


def test_eval_runs_the_full_network_by_default_and_draws_nothing(tmp_path: Path) -> None:
    model = _model(tmp_path).eval()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    state = torch.get_rng_state()
    y = model(x)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(y, _hand(model, 1.0, LAYERS)(x), rtol=1e-12, atol=1e-12)
    assert model.stats() == {
        "layers.0.nested.nested_width": 1.0,
        "layers.0.nested.nested_depth": float(LAYERS),
    }


def test_eval_sub_network_from_the_spec(tmp_path: Path) -> None:
    model = _model(tmp_path, eval_width=0.5, eval_depth=2).eval()
    x = torch.randn(1, 4, D, dtype=torch.float64)
    torch.testing.assert_close(model(x), _hand(model, 0.5, 2)(x), rtol=1e-12, atol=1e-12)


def test_training_samples_a_sub_network_per_step(tmp_path: Path) -> None:
    model = _model(tmp_path, widths=[0.25, 1.0], depths=[1, 3]).train()
    x = torch.randn(2, 4, D, dtype=torch.float64)
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        y = model(x)
        stats = model.stats()
        w, d = stats["layers.0.nested.nested_width"], int(stats["layers.0.nested.nested_depth"])
        seen.add((w, d))
        torch.testing.assert_close(y, _hand(model, w, d)(x), rtol=1e-12, atol=1e-12)
    assert seen == {(0.25, 1), (0.25, 3), (1.0, 1), (1.0, 3)}
    # The draws come from the global torch RNG: the same seed gives the same sequence.
    torch.manual_seed(0)
    again = []
    for _ in range(6):
        model(x)
        s = model.stats()
        again.append((s["layers.0.nested.nested_width"], s["layers.0.nested.nested_depth"]))
    torch.manual_seed(0)
    for w, d in again:
        model(x)
        s = model.stats()
        assert (s["layers.0.nested.nested_width"], s["layers.0.nested.nested_depth"]) == (w, d)


def test_a_sub_network_trains_only_its_slice(tmp_path: Path) -> None:
    model = _model(tmp_path).eval()
    m = _stack(model)
    m.choose(0.5, 2)
    model(torch.randn(2, 3, D, dtype=torch.float64)).square().sum().backward()
    assert m.w_up.grad[:2, :4].abs().min() > 0
    assert m.w_up.grad[:, 4:].abs().max() == 0  # units past the width
    assert m.w_up.grad[2:].abs().max() == 0 and m.b_down.grad[2:].abs().max() == 0  # depth


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"depths": [1, 4]}, "depth 4 exceeds the stack's 3 layers"),
        ({"widths": [0.05]}, "width fraction 0.05 of 8 hidden units keeps no unit"),
        ({"widths": [1.5]}, "width fractions must lie in (0, 1], got 1.5"),
    ],
)
def test_bad_sub_networks_are_located_errors(tmp_path: Path, params: dict, message: str) -> None:
    spec = {
        "model": "sorted",
        "d_model": D,
        "layers": [{"nested": {"layers": LAYERS, "hidden": H, **params}}],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    messages: list[str] = []
    assert run(["check", str(path)], handler=messages.append) == 2
    text = "\n".join(messages)
    assert message in text and f"{path}:" in text, text
