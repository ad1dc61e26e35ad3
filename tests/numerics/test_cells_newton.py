"""The diagonal GRU (`gru: {recurrent: diagonal}`, cell diag_gru) in its Newton and
sequential modes against a float64 step-by-step loop written here from the equations:
outputs, final state and every parameter gradient; streaming; the spec errors.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from oracle_helpers import run_in_chunks, spec_text

import archc
from archc.backends.torch.emit import emit_torch
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError
from archc.ir.cost import model_cost

H, VOCAB, OUT = 12, 7, 5
PATH = "layers.1.gru"


def _gru(**params: Any) -> dict[str, Any]:
    return {"gru": {"hidden": H, "recurrent": "diagonal", **params}}


def _model(mode: str, seed: int = 0) -> Any:
    layers = ["embed", _gru(mode=mode, newton_iters=32, newton_tol=1e-12), {"head": {"out": OUT}}]
    model = archc.compile(spec_text(layers, d_model=H, vocab=VOCAB), seed=seed).double()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3 if "weight_hh" not in name else 0.5)
    return model


def _reference(x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """h' = (1 - z) h + z c with z, r, c from x W^T + b and per-unit recurrent weights."""

    def sig(v: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + torch.exp(-v))

    w, u, b = p["weight_ih"], p["weight_hh"], p["bias"]
    h = x.new_zeros(x.shape[0], H)
    ys = []
    for t in range(x.shape[1]):
        pre = x[:, t] @ w.T + b
        z = sig(pre[:, :H] + u[0] * h)
        r = sig(pre[:, H : 2 * H] + u[1] * h)
        c = torch.tanh(pre[:, 2 * H :] + u[2] * (r * h))
        h = (1.0 - z) * h + z * c
        ys.append(h)
    return torch.stack(ys, 1), h


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return rel_rms(a, b, floor=1e-6)


@pytest.mark.parametrize("t", [1, 63, 257])
def test_newton_equals_sequential_equals_float64_loop(t: int) -> None:
    seq, newton = _model("sequential"), _model("newton")
    assert isinstance(newton.get_submodule(PATH).mode, str)
    ids = torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(t))
    weights = torch.randn(2, t, OUT, dtype=torch.float64)

    params = dict(seq.named_parameters())
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    x = leaves["layers.0.embed.weight"][ids]
    ref_p = {k.removeprefix(PATH + "."): v for k, v in leaves.items() if k.startswith(PATH)}
    h_ref, final_ref = _reference(x, ref_p)
    y_ref = h_ref @ leaves["layers.2.head.weight"].T
    (y_ref * weights).sum().backward()

    for model in (seq, newton):
        y = model(ids)  # the training path: newton_scan for mode newton
        assert _rel(y.detach(), y_ref.detach()) < 1e-9
        emb = model.get_submodule("layers.0.embed")(ids)
        _, final = model.get_submodule(PATH)(emb)
        assert _rel(final.detach(), final_ref.detach()) < 1e-9
        (y * weights).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert _rel(p.grad, leaves[name].grad) < 1e-8, name


@pytest.mark.parametrize("mode", ["newton", "sequential", "auto"])
def test_streaming_equals_full(mode: str) -> None:
    model = _model(mode).eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        full = model(ids)
        _, final = model.get_submodule(PATH)(model.get_submodule("layers.0.embed")(ids))
        streamed, state = run_in_chunks(model, ids, (1, 3, 17, 1, 18))
    assert (streamed - full).abs().max() < 1e-10
    assert (state[PATH] - final).abs().max() < 1e-10


def test_standalone_model_runs_the_same_recurrence() -> None:
    model = _model("newton")
    graph = archc.to_graph(
        spec_text(["embed", _gru(mode="newton"), {"head": {"out": OUT}}], d_model=H, vocab=VOCAB)
    )
    src = emit_torch(graph)
    assert "class DiagGRU" in src and "class MinGRU" not in src
    ns: dict[str, Any] = {"__name__": "standalone_model"}
    exec(compile(src, "model.py", "exec"), ns)
    other = ns["Model"]().double()
    other.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (2, 33))
    assert (other(ids) - model(ids)).abs().max() < 1e-9


def test_state_cost_and_params() -> None:
    graph = archc.to_graph(spec_text(["embed", _gru()], d_model=H, vocab=VOCAB))
    (node,) = [n for n in graph.walk() if n.op == "scan"]
    assert node.attrs["cell"] == "diag_gru" and node.attrs["mode"] == "auto"
    assert (node.attrs["iters"], node.attrs["tol"]) == (8, 1e-6)
    shapes = {p.name: p.shape for p in node.params}
    assert shapes == {"weight_ih": (3 * H, H), "weight_hh": (3, H), "bias": (3 * H,)}
    cost = model_cost(graph, 64)
    assert cost.state_bytes_per_sequence == 4 * H
    assert cost.forward_flops_per_token >= 2 * 3 * H * H
    assert not math.isnan(cost.forward_flops_per_token)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"gru": {"mode": "newton"}}, "applies to recurrent: diagonal only"),
        ({"gru": {"newton_iters": 4}}, "applies to recurrent: diagonal only"),
        ({"gru": {"newton_tol": 1e-3}}, "applies to recurrent: diagonal only"),
        (_gru(mode="chunked"), "not linear"),
        (_gru(layers=2), "one layer"),
        (_gru(newton_iters=0), "newton_iters"),
        ({"mingru": {"mode": "newton"}}, "reserved"),
    ],
)
def test_bad_settings_are_located_spec_errors(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError, match=message) as err:
        archc.compile(spec_text(["embed", layer], d_model=16, vocab=VOCAB))
    assert "<yaml>:" in str(err.value)  # located: <yaml>:line:col
