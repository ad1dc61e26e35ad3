"""The Aaren layer (backends/torch/modules/cells_aaren.py) and the generic associative
scan (backends/torch/scans/associative.py) against independent oracles.

Aaren with a learned query is causal softmax attention whose query is the same vector
at every position, so F.scaled_dot_product_attention(is_causal=True) with that query
repeated over time is the oracle: outputs and every gradient in float64, both modes, odd
shapes (T = 1, 63, 257; D = 60, 4 heads of 15), keys scaled x10 and x0.1. The final
carry is checked against an explicitly computed max / exp-sum; the generic scan against
plain loops for a commutative and two non-commutative combines; padded batches against
per-sequence runs; streaming against full runs; and the spec errors, costs and the
standalone model.py fallback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from oracle_helpers import SPECS, run_in_chunks, spec_text

import archc
from archc.backends.torch.emit import emit_torch
from archc.backends.torch.modules.cells_aaren import Aaren
from archc.backends.torch.scans.associative import (
    aaren_combine,
    aaren_scan,
    associative_scan,
)
from archc.backends.triton.testing import rel_rms
from archc.diagnostics import DiagnosticError
from archc.ir.cost import model_cost
from archc.ir.printer import structural_hash
from archc.passes.select_scan_mode import select_scan_mode

D, HEADS, VOCAB = 60, 4, 7
DH = D // HEADS
REL = 1e-10  # float64 against float64: rounding only
MODES = ["sequential", "associative"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return rel_rms(a, b, floor=1e-12)


def _layer(mode: str, key_scale: float = 1.0, seed: int = 0) -> Aaren:
    torch.manual_seed(seed)
    layer = Aaren(D, HEADS, mode=mode).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
        layer.weight_k.mul_(key_scale)
    return layer


def _sdpa_reference(
    x: torch.Tensor, p: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (B, T, D), carry (B, H, dh + 2) = [u | m | w]) from causal SDPA whose query is
    the learned q at every position; the carry from an explicit max and exp-sums."""
    B, T, _ = x.shape
    k = (x @ p["weight_k"].T).view(B, T, HEADS, DH).transpose(1, 2)
    v = (x @ p["weight_v"].T).view(B, T, HEADS, DH).transpose(1, 2)
    q = p["query"][None, :, None, :].expand(B, HEADS, T, DH)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(DH)
    y = o.transpose(1, 2).reshape(B, T, D) @ p["weight_o"].T
    s = (k * p["query"][None, :, None, :]).sum(-1) / DH**0.5  # (B, H, T)
    m = s.max(dim=-1).values
    e = torch.exp(s - m[..., None])
    u = (e[..., None] * v).sum(dim=2)
    w = e.sum(dim=-1)
    return y, torch.cat([u, m[..., None], w[..., None]], dim=-1)


@pytest.mark.parametrize("key_scale", [1.0, 10.0, 0.1])
@pytest.mark.parametrize("t", [1, 63, 257])
@pytest.mark.parametrize("mode", MODES)
def test_layer_equals_causal_sdpa(mode: str, t: int, key_scale: float) -> None:
    layer = _layer(mode, key_scale)
    params = dict(layer.named_parameters())
    ref_p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, t, D, dtype=torch.float64, generator=g)
    x_ref = x.clone().requires_grad_()
    x.requires_grad_()
    wy = torch.randn(2, t, D, dtype=torch.float64, generator=g)
    wc = torch.randn(2, HEADS, DH + 2, dtype=torch.float64, generator=g)

    y, carry = layer(x)
    y_ref, carry_ref = _sdpa_reference(x_ref, ref_p)
    assert torch.isfinite(y).all() and torch.isfinite(carry).all()
    assert _rel(y.detach(), y_ref.detach()) < REL
    assert _rel(carry.detach(), carry_ref.detach()) < REL

    # u and w are relative to m: compare gradients of a loss on both outputs.
    ((y * wy).sum() + (carry * wc).sum()).backward()
    ((y_ref * wy).sum() + (carry_ref * wc).sum()).backward()
    assert _rel(x.grad, x_ref.grad) < 1e-9
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert _rel(p.grad, ref_p[name].grad) < 1e-9, name


@pytest.mark.parametrize("mode", MODES)
def test_float32_layer_accumulates_in_float32(mode: str) -> None:
    layer = _layer(mode, key_scale=10.0)
    x = torch.randn(2, 63, D, dtype=torch.float64)
    y_ref, _ = _sdpa_reference(x, dict(layer.named_parameters()))
    y, carry = layer.float()(x.float())
    assert y.dtype == torch.float32 and carry.dtype == torch.float32
    assert _rel(y.detach(), y_ref.detach()) < 1e-5


# -- the generic associative scan ------------------------------------------------------


def _linear_combine(a: tuple, b: tuple) -> tuple:
    """h -> a h + b maps, composed in time order (commutative in a, not in b)."""
    return a[0] * b[0], b[0] * a[1] + b[1]


def _affine_combine(a: tuple, b: tuple) -> tuple:
    """h -> A h + c with matrices A (k, k): composition is not commutative."""
    A1, c1 = a
    A2, c2 = b
    return A2 @ A1, (A2 @ c1[..., None])[..., 0] + c2


def _loop(step: Callable[[Any, Any], Any], items: list[Any]) -> list[Any]:
    acc, out = items[0], [items[0]]
    for it in items[1:]:
        acc = step(acc, it)
        out.append(acc)
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("t", [1, 2, 5, 63, 257])
def test_generic_scan_linear_monoid_equals_loop(t: int, reverse: bool) -> None:
    a = torch.rand(3, t, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, t, 4, dtype=torch.float64, requires_grad=True)
    ha, hb = associative_scan(_linear_combine, (a, b), dim=1, reverse=reverse)
    # The loop: h_t = a_t h_{t-1} + b_t from h = 0 (forward), or the reversed sequence.
    order = range(t - 1, -1, -1) if reverse else range(t)
    h, hs = torch.zeros(3, 4, dtype=torch.float64), {}
    for i in order:
        h = a[:, i] * h + b[:, i]
        hs[i] = h
    ref = torch.stack([hs[i] for i in range(t)], dim=1)
    assert _rel(hb, ref) < REL
    w = torch.randn_like(ref)
    # T = 1: h_0 = b_0 does not read a_0 in the scan (the loop multiplies it by h = 0).
    kw = {"allow_unused": True, "materialize_grads": True}
    (ga, gb) = torch.autograd.grad((hb * w).sum(), (a, b), **kw)
    (ra, rb) = torch.autograd.grad((ref * w).sum(), (a, b), **kw)
    assert _rel(ga, ra) < 1e-9 and _rel(gb, rb) < 1e-9
    # The decay product is the scan of a alone.
    prods = torch.cumprod(a.flip(1), 1).flip(1) if reverse else torch.cumprod(a, 1)
    assert _rel(ha, prods) < REL


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("t", [1, 7, 63])
def test_generic_scan_noncommutative_combines_equal_loops(t: int, reverse: bool) -> None:
    # Affine maps with mixed ranks (A (B, T, k, k), c (B, T, k)) scanned along dim 1.
    A = torch.randn(2, t, 3, 3, dtype=torch.float64) * 0.5
    c = torch.randn(2, t, 3, dtype=torch.float64)
    sA, sc = associative_scan(_affine_combine, (A, c), dim=1, reverse=reverse)
    items = [(A[:, i], c[:, i]) for i in range(t)]
    # reverse: time runs backwards, e_{T-1} (+) ... (+) e_t.
    ref = _loop(_affine_combine, items[::-1])[::-1] if reverse else _loop(_affine_combine, items)
    assert _rel(sA, torch.stack([r[0] for r in ref], 1)) < REL
    assert _rel(sc, torch.stack([r[1] for r in ref], 1)) < REL
    # Plain matrix products along dim 0 (time first): P_t = M_0 M_1 ... M_t.
    M = torch.randn(t, 2, 2, dtype=torch.float64)
    (P,) = associative_scan(lambda a, b: (a[0] @ b[0],), (M,), dim=0)
    assert _rel(P, torch.stack(_loop(torch.matmul, list(M)))) < REL


def test_generic_scan_checks_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        associative_scan(_linear_combine, (torch.ones(2, 3), torch.ones(2, 4)), dim=1)
    assert associative_scan(_linear_combine, ()) == ()


# -- aaren_scan: modes, carries, the -inf guard -------------------------------------------


def _scores(b: int, h: int, t: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.randn(b, h, t, dtype=torch.float64) * scale,
        torch.randn(b, h, t, 5, dtype=torch.float64),
    )


def test_aaren_scan_modes_agree_with_a_carry_and_skipped_tokens() -> None:
    s, v = _scores(2, 3, 40)
    s[0, 1, :7] = float("-inf")  # leading skipped tokens: the carry stays the identity
    s[1, :, 20:25] = float("-inf")
    s.requires_grad_()
    v.requires_grad_()
    outs = {}
    for mode in MODES:
        o1, c1 = aaren_scan(s[..., :13], v[..., :13, :], None, mode)
        o2, c2 = aaren_scan(s[..., 13:], v[..., 13:, :], c1, mode)
        o = torch.cat([o1, o2], dim=2)
        full, cf = aaren_scan(s, v, None, mode)
        assert _rel(o, full) < REL
        for a, b in zip(c2, cf, strict=True):
            assert torch.equal(a.isfinite(), b.isfinite()) and _rel(a, b) < REL
        assert torch.isfinite(o).all()
        assert (o[0, 1, :7] == 0).all()  # softmax over nothing: 0, not NaN
        grads = torch.autograd.grad((o * o).sum(), (s, v))
        assert all(torch.isfinite(g).all() for g in grads)
        outs[mode] = (o, grads)
    (o_s, g_s), (o_a, g_a) = outs["sequential"], outs["associative"]
    assert _rel(o_a, o_s) < REL
    assert _rel(g_a[0], g_s[0]) < 1e-9 and _rel(g_a[1], g_s[1]) < 1e-9


@pytest.mark.parametrize("mode", MODES)
def test_aaren_scan_all_skipped_is_the_identity(mode: str) -> None:
    s = torch.full((1, 2, 9), float("-inf"), dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 9, 3, dtype=torch.float64, requires_grad=True)
    o, (m, u, w) = aaren_scan(s, v, None, mode)
    assert (o == 0).all() and (m == float("-inf")).all() and (u == 0).all() and (w == 0).all()
    gs, gv = torch.autograd.grad(o.sum() + u.sum() + w.sum(), (s, v))
    assert torch.isfinite(gs).all() and torch.isfinite(gv).all()
    # The identity combines with anything to that thing, in either order.
    x = (torch.tensor([1.5]), torch.tensor([[2.0, -1.0]]), torch.tensor([0.25]))
    ident = (torch.tensor([float("-inf")]), torch.zeros(1, 2), torch.zeros(1))
    for r in (aaren_combine(ident, x), aaren_combine(x, ident)):
        assert all(torch.equal(a, b) for a, b in zip(r, x, strict=True))


def test_aaren_scan_half_inputs_accumulate_in_float32() -> None:
    s, v = _scores(1, 2, 50, scale=20.0)
    o_ref, _ = aaren_scan(s, v, None, "sequential")
    for mode in MODES:
        o, (m, u, w) = aaren_scan(s.bfloat16(), v.bfloat16(), None, mode)
        assert o.dtype == torch.bfloat16 and m.dtype == u.dtype == w.dtype == torch.float32
        assert _rel(o, o_ref) < 2e-2  # bf16 inputs: rounding of s and v only
    with pytest.raises(ValueError, match="mode"):
        aaren_scan(s, v, None, "chunked")
    o, (m, _, _) = aaren_scan(s[..., :0], v[..., :0, :], None, "associative")
    assert o.shape == (1, 2, 0, 5) and (m == float("-inf")).all()


# -- padded batches and streaming ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_varlen_equals_per_sequence_runs(mode: str) -> None:
    layer = _layer(mode)
    t, lengths = 37, torch.tensor([37, 1, 20, 36])
    x = torch.randn(4, t, D, dtype=torch.float64)
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = float("nan")  # padding content must never matter
    x.requires_grad_()
    h0 = layer(torch.randn(4, 5, D, dtype=torch.float64))[1].detach()
    for init in (None, h0):
        y, carry = layer(x, init, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            hi = None if init is None else init[i : i + 1]
            yi, ci = layer(x[i : i + 1, :n].detach(), hi)
            assert _rel(y[i : i + 1, :n].detach(), yi.detach()) < REL
            assert (y[i, n:] == 0).all()
            assert _rel(carry[i : i + 1].detach(), ci.detach()) < REL
        (gx,) = torch.autograd.grad(y.square().sum() + carry.sum(), (x,))
        assert torch.isfinite(gx).all()
        for i, n in enumerate(lengths.tolist()):
            assert (gx[i, n:] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_layer_streaming_equals_full(mode: str) -> None:
    layer = _layer(mode)
    x = torch.randn(2, 60, D, dtype=torch.float64)
    with torch.no_grad():
        full, final = layer(x)
        ys, h, i = [], None, 0
        for n in (1, 3, 17, 1, 38):
            y, h = layer(x[:, i : i + n], h)
            ys.append(y)
            i += n
    assert _rel(torch.cat(ys, 1), full) < REL and _rel(h, final) < REL


def _model(mode: str) -> Any:
    layers = ["embed", {"aaren": {"heads": HEADS, "mode": mode}}, {"head": {"out": 5}}]
    model = archc.compile(spec_text(layers, d_model=D, vocab=VOCAB), seed=0).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("mode", ["sequential", "associative", "auto"])
def test_compiled_model_streams_like_full(mode: str) -> None:
    model = _model(mode).eval()
    assert model.incremental_support() == (True, "") and model.constant_state()
    ids = torch.randint(0, VOCAB, (2, 60))
    with torch.no_grad():
        full, final = model(ids, return_state=True)
        streamed, state = run_in_chunks(model, ids, (1, 3, 17, 1, 38))
    assert (streamed - full).abs().max() < 1e-10
    key = "layers.1.aaren"
    assert state[key].shape == (2, HEADS, DH + 2)
    assert (state[key] - final[key]).abs().max() < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_compiled_model_varlen_equals_per_sequence_runs(mode: str) -> None:
    model = _model(mode).eval()
    ids, lengths = torch.randint(0, VOCAB, (3, 21)), torch.tensor([21, 1, 9])
    with torch.no_grad():
        y, state = model(ids, return_state=True, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            yi, si = model(ids[i : i + 1, :n], return_state=True)
            assert _rel(y[i : i + 1, :n], yi) < REL
            key = "layers.1.aaren"
            assert _rel(state[key][i : i + 1], si[key]) < REL


def test_emitted_model_falls_back_to_its_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_text(["embed", {"aaren": {"heads": HEADS, "mode": "associative"}}], D, VOCAB)
    model = archc.compile(spec, seed=0).double()
    src = emit_torch(model.graph)
    assert "class Aaren(" in src and "aaren_scan" in src
    lstm = emit_torch(archc.to_graph(spec_text(["embed", {"lstm": 8}], D, VOCAB)))
    assert "Aaren" not in lstm
    # Without archc the lazy import fails and the class's own loop runs.
    monkeypatch.setitem(sys.modules, "archc.backends.torch.scans.associative", None)
    ns: dict[str, Any] = {}
    exec(compile(src, "model.py", "exec"), ns)
    standalone = ns["Model"]().double()
    standalone.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        assert _rel(standalone(ids), model(ids)) < REL


# -- spec, IR, costs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"aaren": {"mode": "chunked"}}, "no 'chunked' form"),
        ({"aaren": {"mode": "newton"}}, "reserved"),
        ({"aaren": {"heads": 7}}, "must divide"),
        ({"aaren": {"heads": 0}}, "heads"),
    ],
)
def test_bad_settings_are_spec_errors(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(DiagnosticError, match=message):
        archc.compile(spec_text(["embed", layer], d_model=D, vocab=VOCAB))


def test_params_costs_and_mode_selection() -> None:
    layers = ["embed", {"aaren": HEADS}, {"aaren": {"heads": 2}}]
    graph = archc.to_graph(spec_text(layers, d_model=D, vocab=VOCAB))
    shapes = {f"{n.path}.{p.name}": p.shape for n in graph.walk() for p in n.params}
    assert shapes["layers.1.aaren.query"] == (HEADS, DH)
    assert shapes["layers.2.aaren.query"] == (2, D // 2)
    assert shapes["layers.1.aaren.weight_o"] == (D, D)
    cost = model_cost(graph, 64)
    assert cost.state_bytes_per_sequence == 4 * ((D + 2 * HEADS) + (D + 2 * 2))
    assert cost.forward_flops_per_token >= 2 * 2 * 3 * D * D  # matmul-class only
    assert select_scan_mode("aaren", 4096, "cuda")[0] == "associative"
    assert select_scan_mode("aaren", 4096, "cpu")[0] == "sequential"


def test_library_spec_twins_agree() -> None:
    yaml_graph = archc.to_graph(SPECS / "aaren.yaml")
    assert structural_hash(yaml_graph) == structural_hash(archc.to_graph(SPECS / "aaren.arch"))
    cells = [n.attrs["cell"] for n in yaml_graph.walk() if n.op == "scan"]
    assert cells == ["aaren", "aaren"]
