"""Cells registered from Python (archc.register_cell): a GRU written this way equals
torch.nn.GRU, parameters and shorthands work, and mistakes are located errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import archc
from archc.cli import run
from archc.frontend import components
from archc.ir import build


@pytest.fixture(autouse=True)
def _restore_registries() -> Iterator[None]:
    """Registered cells stay in this test: other tests (the generated reference) list
    the registry."""
    saved = dict(components._REGISTRY), dict(build.BUILDERS)
    yield
    components._REGISTRY.clear()
    components._REGISTRY.update(saved[0])
    build.BUILDERS.clear()
    build.BUILDERS.update(saved[1])


def gru(hidden: int) -> dict:
    """torch.nn.GRU's equations, gate by gate (r, z, n in its weight order)."""
    return {
        "state": {"h": hidden},
        "let": {
            "r": f"sigmoid(linear(x, {hidden}) + linear(h, {hidden}))",
            "z": f"sigmoid(linear(x, {hidden}) + linear(h, {hidden}))",
            "n": f"tanh(linear(x, {hidden}) + r * linear(h, {hidden}))",
        },
        "update": {"h": "(1 - z) * n + z * h"},
        "output": "h",
    }


SPEC = "model: m\nd_model: 5\nlayers:\n  - pygru: {hidden: 7}\n"


def test_registered_gru_equals_nn_gru() -> None:
    archc.register_cell("pygru", gru, hidden=16)
    model = archc.compile(SPEC).double()
    ref = torch.nn.GRU(5, 7, batch_first=True).double()
    params = dict(model.named_parameters())
    for k, gate in enumerate("rzn"):
        rows = slice(7 * k, 7 * (k + 1))
        for j, (w, b) in enumerate(
            [(ref.weight_ih_l0, ref.bias_ih_l0), (ref.weight_hh_l0, ref.bias_hh_l0)]
        ):
            (weight,) = [p for n, p in params.items() if n.endswith(f"let_{gate}_linear{j}_weight")]
            (bias,) = [p for n, p in params.items() if n.endswith(f"let_{gate}_linear{j}_bias")]
            with torch.no_grad():
                weight.copy_(w[rows])
                bias.copy_(b[rows])
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    expected, _ = ref(x)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_shorthand_default_and_knobs() -> None:
    archc.register_cell("pygru", gru, hidden=16)
    short = archc.to_graph("model: m\nd_model: 4\nlayers: [{pygru: 6}]\n")
    default = archc.to_graph("model: m\nd_model: 4\nlayers: [pygru]\n")
    widths = [next(n for n in g.walk() if n.op == "scan").attrs["hidden"] for g in (short, default)]
    assert widths == [6, 16]
    seq = archc.to_graph("model: m\nd_model: 4\nlayers: [{pygru: {hidden: 6, mode: sequential}}]\n")
    assert next(n for n in seq.walk() if n.op == "scan").attrs["mode"] == "sequential"


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        archc.register_cell("Bad-Name", gru, hidden=4)
    with pytest.raises(ValueError, match="positive int"):
        archc.register_cell("c1", gru, hidden=0)
    with pytest.raises(ValueError, match="positive int"):
        archc.register_cell("c2", gru, mode=3)
    archc.register_cell("pygru", gru, hidden=4)
    with pytest.raises(ValueError, match="already registered"):
        archc.register_cell("pygru", gru, hidden=4)


def test_spec_mistakes_are_located(tmp_path: Path) -> None:
    archc.register_cell("pygru", gru, hidden=16)

    def broken(hidden: int) -> dict:
        return {**gru(hidden), "update": {"h": "q * h"}}  # q is not defined

    archc.register_cell("broken", broken, hidden=4)
    cases = {
        "model: m\nd_model: 4\nlayers:\n  - pygru: {width: 3}\n": (4, "width"),
        "model: m\nd_model: 4\nlayers:\n  - broken: 4\n": (4, "q"),
    }
    for text, (line, word) in cases.items():
        spec = tmp_path / "s.yaml"
        spec.write_text(text)
        messages: list[str] = []
        assert run(["compile", str(spec)], handler=messages.append) == 2
        out = "\n".join(messages)
        assert f"{spec}:{line}:" in out and "error:" in out and word in out, out
        assert "Traceback" not in out
