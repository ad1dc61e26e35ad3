"""ParaRNN Newton scan vs the step-by-step float64 loop: states, gradients, fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor

from archc.backends.torch.scans import newton as nw

# torch loads its forward-AD decompositions with torch.jit.script on the first JVP.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script`:DeprecationWarning")

H, DX, B = 60, 12, 2


def _cell(kind: str, dtype: torch.dtype = torch.float64, scale: float = 1.0):
    """(params, step, jacobian, project) for a diagonal cell; `scale` multiplies every
    pre-activation (W, u and b) to push the gates to their extremes."""
    if kind == "gru":
        p = nw.init_diag_gru(DX, H, dtype=dtype)
        step_fn, project = nw.diag_gru_step, nw.diag_gru_inputs
    else:
        p = nw.init_diag_rnn(DX, H, dtype=dtype)
        step_fn, project = nw.diag_tanh_rnn_step, nw.diag_rnn_inputs
    if scale != 1.0:
        with torch.no_grad():
            for t in p.tensors():
                t.mul_(scale)
    step, jac = step_fn(p)
    return p, step, jac, lambda x: project(p, x)


def _grads(out: Tensor, wrt: list[Tensor], weight: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad((out * weight).sum(), wrt))


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_analytic_jacobian_is_the_autograd_diagonal(kind: str) -> None:
    _, step, jac, project = _cell(kind)
    x = project(torch.randn(B, 3, DX, dtype=torch.float64)).detach()
    h = torch.randn(B, 3, H, dtype=torch.float64)
    analytic = jac(h, x)
    for b in range(B):
        for t in range(3):
            xt = x[b, t]
            full = torch.autograd.functional.jacobian(lambda v, xt=xt: step(v, xt), h[b, t])
            assert torch.allclose(full.diagonal(), analytic[b, t], rtol=1e-12, atol=1e-12)
            off = full - torch.diag(full.diagonal())
            assert off.abs().max().item() == 0.0  # the cell really is diagonal
    # jacobian=None path: one JVP with an all-ones tangent gives the same diagonal.
    assert torch.allclose(nw._jvp_diag(step, h, x), analytic, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["gru", "rnn"])
@pytest.mark.parametrize("T", [1, 63, 257])
def test_forward_and_gradients_match_sequential(kind: str, T: int) -> None:
    p, step, jac, project = _cell(kind)
    xr = torch.randn(B, T, DX, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(B, H, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(B, T, H, dtype=torch.float64)
    wrt = [xr, h0, *p.tensors()]

    ref = nw.sequential_scan(step, project(xr), h0)
    g_ref = _grads(ref, wrt, weight)

    out, info = nw.newton_scan(step, jac, project(xr), h0, iters=16, tol=1e-12)
    assert info.converged and not info.fell_back
    assert info.iterations <= 10, info  # contractive cells: a handful of iterations
    assert _rel(out, ref) < 1e-12
    for g, gr in zip(_grads(out, wrt, weight), g_ref, strict=True):
        assert _rel(g, gr) < 1e-10

    # Unrolled backward (autograd through the last iteration) is exact at convergence.
    out_u, _ = nw.newton_scan(step, jac, project(xr), h0, iters=16, tol=1e-12, backward="unrolled")
    assert _rel(out_u, ref) < 1e-12
    for g, gr in zip(_grads(out_u, wrt, weight), g_ref, strict=True):
        assert _rel(g, gr) < 1e-8


def test_long_sequence_forward_and_one_gradient() -> None:
    T = 1024
    p, step, jac, project = _cell("gru")
    xr = torch.randn(B, T, DX, dtype=torch.float64)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    weight = torch.randn(B, T, H, dtype=torch.float64)
    ref = nw.sequential_scan(step, project(xr), h0)
    out, info = nw.newton_scan(step, jac, project(xr), h0, iters=16, tol=1e-12)
    assert info.converged and info.iterations <= 10
    assert _rel(out, ref) < 1e-12
    (g_ref,) = _grads(ref, [p.u], weight)
    (g,) = _grads(out, [p.u], weight)
    assert _rel(g, g_ref) < 1e-10


def test_autodiff_jacobian_path_matches_analytic() -> None:
    p, step, jac, project = _cell("gru")
    xr = torch.randn(B, 63, DX, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    weight = torch.randn(B, 63, H, dtype=torch.float64)
    out_a, info_a = nw.newton_scan(step, jac, project(xr), h0, tol=1e-12, iters=16)
    out_n, info_n = nw.newton_scan(step, None, project(xr), h0, tol=1e-12, iters=16)
    assert info_a.iterations == info_n.iterations
    assert _rel(out_n, out_a) < 1e-12
    for g, ga in zip(
        _grads(out_n, p.tensors(), weight), _grads(out_a, p.tensors(), weight), strict=True
    ):
        assert _rel(g, ga) < 1e-10


def test_float32_close_to_float64_reference() -> None:
    p, step, jac, project = _cell("gru", dtype=torch.float32)
    xr = torch.randn(B, 257, DX)
    h0 = torch.zeros(B, H)
    out, info = nw.newton_scan(step, jac, project(xr), h0)
    assert info.converged and info.iterations <= 10
    p64 = nw.DiagGRUParams(*(t.detach().double() for t in p.tensors()))
    ref = nw.sequential_scan(
        nw.diag_gru_step(p64)[0], nw.diag_gru_inputs(p64, xr.double()), h0.double()
    )
    assert _rel(out.double(), ref) < 1e-5


def test_not_converged_falls_back_warns_once_and_is_exact(caplog: pytest.LogCaptureFixture) -> None:
    p, step, jac, project = _cell("rnn")
    xr = torch.randn(B, 257, DX, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    weight = torch.randn(B, 257, H, dtype=torch.float64)
    ref = nw.sequential_scan(step, project(xr), h0)
    g_ref = _grads(ref, [xr, *p.tensors()], weight)
    nw._reset_warnings()
    infos, outs = [], []
    with caplog.at_level(logging.WARNING, logger="archc.scan"):
        for _ in range(2):  # same call site twice -> one warning
            out, info = nw.newton_scan(step, jac, project(xr), h0, iters=1)
            outs.append(out)
            infos.append(info)
    warnings = [r for r in caplog.records if r.name == "archc.scan"]
    assert len(warnings) == 1 and "fell back" in warnings[0].getMessage()
    for out, info in zip(outs, infos, strict=True):
        assert info.fell_back and not info.converged and info.iterations == 1
        assert torch.equal(out, ref.detach())
    for g, gr in zip(_grads(outs[0], [xr, *p.tensors()], weight), g_ref, strict=True):
        assert _rel(g, gr) < 1e-10


@pytest.mark.parametrize("kind", ["gru", "rnn"])
@pytest.mark.parametrize("scale", [10.0, 0.1])
def test_gate_extremes_stay_finite(kind: str, scale: float) -> None:
    p, step, jac, project = _cell(kind, dtype=torch.float32, scale=scale)
    xr = torch.randn(B, 257, DX, requires_grad=True)
    h0 = torch.randn(B, H)
    out, info = nw.newton_scan(step, jac, project(xr), h0, iters=12)
    assert torch.isfinite(out).all(), info
    grads = _grads(out, [xr, *p.tensors()], torch.ones_like(out))
    assert all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        ref = nw.sequential_scan(step, project(xr), h0)
    assert (out - ref).abs().max().item() < 1e-4


def test_rejects_bad_arguments() -> None:
    _, step, jac, project = _cell("rnn")
    x = project(torch.randn(B, 4, DX, dtype=torch.float64))
    h0 = torch.zeros(B, H, dtype=torch.float64)
    with pytest.raises(ValueError, match="jac"):
        nw.newton_scan(step, jac, x, h0, jac="dense")
    with pytest.raises(ValueError, match="block"):
        nw.newton_scan(step, None, x, h0, jac="blockdiag", block=7)
    with pytest.raises(ValueError, match="backward"):
        nw.newton_scan(step, jac, x, h0, backward="bptt")
    with pytest.raises(ValueError, match="iters"):
        nw.newton_scan(step, jac, x, h0, iters=0)


def test_block_linear_scan_matches_loop() -> None:
    a = 0.5 * torch.randn(B, 37, 5, 3, 3, dtype=torch.float64)
    b = torch.randn(B, 37, 5, 3, dtype=torch.float64)
    h0 = torch.randn(B, 5, 3, dtype=torch.float64)
    h, fwd, bwd = h0, [], []
    for t in range(37):
        h = (a[:, t] @ h.unsqueeze(-1)).squeeze(-1) + b[:, t]
        fwd.append(h)
    h = h0
    for t in reversed(range(37)):
        h = (a[:, t] @ h.unsqueeze(-1)).squeeze(-1) + b[:, t]
        bwd.append(h)
    assert _rel(nw.block_linear_scan(a, b, h0), torch.stack(fwd, 1)) < 1e-12
    assert _rel(nw.block_linear_scan(a, b, h0, reverse=True), torch.stack(bwd[::-1], 1)) < 1e-12


@pytest.mark.parametrize(("T", "analytic"), [(1, True), (63, True), (257, True), (63, False)])
def test_blockdiag_newton_matches_sequential(T: int, analytic: bool) -> None:
    p = nw.init_block_rnn(DX, H, 4, dtype=torch.float64)
    step, jac = nw.block_tanh_rnn_step(p)
    xr = torch.randn(B, T, DX, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(B, H, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(B, T, H, dtype=torch.float64)
    wrt = [xr, h0, *p.tensors()]
    ref = nw.sequential_scan(step, xr @ p.w.t(), h0)
    g_ref = _grads(ref, wrt, weight)
    out, info = nw.newton_scan(
        step, jac if analytic else None, xr @ p.w.t(), h0, jac="blockdiag", block=4, tol=1e-12
    )
    assert info.converged and not info.fell_back and info.iterations <= 10, info
    assert _rel(out, ref) < 1e-12
    for g, gr in zip(_grads(out, wrt, weight), g_ref, strict=True):
        assert _rel(g, gr) < 1e-10
    if analytic:  # the analytic blocks are the autograd Jacobian's diagonal blocks
        hp, xt = torch.randn(H, dtype=torch.float64), torch.randn(H, dtype=torch.float64)
        full = torch.autograd.functional.jacobian(lambda v: step(v, xt), hp)
        blocks = torch.stack([full[i * 4 : i * 4 + 4, i * 4 : i * 4 + 4] for i in range(H // 4)])
        assert torch.allclose(jac(hp, xt), blocks, rtol=1e-12, atol=1e-12)


def test_fused_step_jacobian_matches_the_pair() -> None:
    """diag_gru_step_jac gives step and jacobian at once, and newton_scan with it solves
    to the same states and gradients as with the separate pair."""
    p, step, jac, project = _cell("gru")
    both = nw.diag_gru_step_jac(p)
    x = torch.randn(B, 40, DX, dtype=torch.float64, requires_grad=True)
    h = torch.randn(B, 40, H, dtype=torch.float64)
    f, j = both(h, project(x).detach())
    assert torch.equal(f, step(h, project(x).detach()))
    assert torch.allclose(j, jac(h, project(x).detach()), rtol=1e-14, atol=1e-14)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    out_pair, _ = nw.newton_scan(step, jac, project(x), h0, iters=16, tol=1e-12)
    out_fused, info = nw.newton_scan(step, jac, project(x), h0, iters=16, tol=1e-12, step_jac=both)
    assert info.converged and _rel(out_fused, out_pair) < 1e-12
    w = torch.randn_like(out_pair)
    for ga, gb in zip(
        _grads(out_fused, [x, *p.tensors()], w), _grads(out_pair, [x, *p.tensors()], w), strict=True
    ):
        assert _rel(ga, gb) < 1e-10
