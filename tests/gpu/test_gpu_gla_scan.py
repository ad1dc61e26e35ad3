"""Chunked GLA / delta rule on CUDA: the full matrix (skipped without CUDA).

The interpreter tests cannot see bf16, real autotuning, register pressure of the
(BT, BT, BK) tile or large grids; these can. Forward and backward kernels, every
gradient against the float64 loop, gate extremes, NaN-prefilled outputs, and the
matrix-scan routing on CUDA. Also times the Triton kernels against torch.compile of the
loop-free torch chunked form (printed, never asserted; archc/bench/scan_matrix.py has
the full benchmark).
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from archc.backends.triton.testing import rel_rms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEV = "cuda"


def _log_decay(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape, device=DEV)
    return {
        "normal": F.logsigmoid(x + 2.0),
        "near0": math.log(1e-4) + 0.1 * x,
        "near1": torch.full(shape, -1e-6, device=DEV),
        "mixed": F.logsigmoid(10 * x),
        "x0.1": 0.1 * F.logsigmoid(x + 2.0),
        "x10": 10.0 * F.logsigmoid(x + 2.0),
    }[kind]


CASES = [
    (T, dk, dv, kind)
    for T in (1, 63, 257)
    for dk, dv in ((12, 20), (64, 64), (128, 96))
    for kind in ("normal", "near0", "near1", "mixed", "x0.1", "x10")
]


@pytest.mark.parametrize(("T", "dk", "dv", "kind"), CASES)
def test_triton_gla_matches_naive(T: int, dk: int, dv: int, kind: str) -> None:
    from archc.backends.triton.gla_scan.naive import gla_naive
    from archc.backends.triton.gla_scan.op import gla_chunked, gla_fwd

    B, H = 2, 3
    ins = [
        torch.randn(B, H, T, dk, device=DEV),
        torch.randn(B, H, T, dk, device=DEV),
        torch.randn(B, H, T, dv, device=DEV),
        _log_decay(kind, (B, H, T, dk)),
        torch.randn(B, H, dk, dv, device=DEV),
    ]
    o = torch.full((B, H, T, dv), float("nan"), device=DEV)
    S = torch.full((B, H, dk, dv), float("nan"), device=DEV)
    gla_fwd(*ins, o, S)
    o_ref, S_ref = gla_naive(*(x.double() for x in ins))
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert rel_rms(o, o_ref) < 1e-5
    assert rel_rms(S, S_ref) < 1e-5

    ins = [x.requires_grad_() for x in ins]
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    go, gS = torch.randn_like(o), torch.randn_like(S)
    got = torch.autograd.grad(gla_chunked(*ins), ins, (go, gS))
    ref = torch.autograd.grad(gla_naive(*ref_ins), ref_ins, (go.double(), gS.double()))
    for name, g, r in zip(["dq", "dk", "dv", "dlog_g", "dS0"], got, ref, strict=True):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, r) < 1e-4, name


@pytest.mark.parametrize("with_s0", [True, False])
def test_triton_gla_backward_writes_every_element(with_s0: bool) -> None:
    from archc.backends.triton.gla_scan.op import gla_bwd

    B, H, T, dk, dv = 2, 3, 100, 96, 80
    q, k = torch.randn(B, H, T, dk, device=DEV), torch.randn(B, H, T, dk, device=DEV)
    v, lg = torch.randn(B, H, T, dv, device=DEV), _log_decay("mixed", (B, H, T, dk))
    S0 = torch.randn(B, H, dk, dv, device=DEV) if with_s0 else None
    go, gS = torch.randn(B, H, T, dv, device=DEV), torch.randn(B, H, dk, dv, device=DEV)
    bufs = [torch.full_like(x, float("nan")) for x in (q, k, v, lg)]
    dS0 = torch.full((B, H, dk, dv), float("nan"), device=DEV)
    gla_bwd(q, k, v, lg, S0, go, gS, *bufs, dS0)
    for name, g in zip(["dq", "dk", "dv", "dlog_g", "dS0"], [*bufs, dS0], strict=True):
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_gla_half_inputs(dtype: torch.dtype) -> None:
    from archc.backends.triton.gla_scan.naive import gla_naive
    from archc.backends.triton.gla_scan.op import gla_chunked

    B, H, T, dk, dv = 2, 4, 200, 64, 64
    ins = [
        torch.randn(B, H, T, dk, device=DEV) / 8,
        torch.randn(B, H, T, dk, device=DEV),
        torch.randn(B, H, T, dv, device=DEV),
        _log_decay("normal", (B, H, T, dk)),
    ]
    half = [x.to(dtype).requires_grad_() for x in ins]
    o, S = gla_chunked(*half)
    ref_ins = [x.detach().float().requires_grad_() for x in half]
    o_ref, S_ref = gla_naive(*ref_ins)
    assert o.dtype == dtype
    assert rel_rms(o, o_ref) < 2e-2 and rel_rms(S, S_ref) < 1e-4
    go, gS = torch.randn_like(o), torch.randn_like(S)
    got = torch.autograd.grad((o, S), half, (go, gS))
    ref = torch.autograd.grad((o_ref, S_ref), ref_ins, (go.float(), gS))
    for g, r, x in zip(got, ref, half, strict=True):
        assert g.dtype == x.dtype and torch.isfinite(g).all()
        assert rel_rms(g, r) < 2e-2


@pytest.mark.parametrize("T", [1, 63, 257])
@pytest.mark.parametrize("kind", ["normal", "near0", "near1"])
def test_torch_matrix_scans_on_cuda(T: int, kind: str) -> None:
    from archc.backends.torch.scans.matrix import delta_scan, gla_scan

    B, H, dk, dv = 2, 2, 12, 20
    q, k = torch.randn(B, H, T, dk, device=DEV), torch.randn(B, H, T, dk, device=DEV)
    v, S0 = torch.randn(B, H, T, dv, device=DEV), torch.randn(B, H, dk, dv, device=DEV)
    lg = _log_decay(kind, (B, H, T, dk))
    for chunk in (16, 64):
        o1, s1 = gla_scan(
            q.double(), k.double(), v.double(), lg.double(), S0.double(), mode="sequential"
        )
        for kernel in (False, True):  # the torch chunked path, then the Triton kernel
            o2, s2 = gla_scan(q, k, v, lg, S0, chunk=chunk, kernel=kernel)
            assert rel_rms(o2, o1) < 2e-5 and rel_rms(s2, s1) < 2e-5
        kn, beta = F.normalize(k, dim=-1), torch.sigmoid(torch.randn(B, H, T, device=DEV))
        o1, s1 = delta_scan(
            q.double(), kn.double(), v.double(), beta.double(), S0.double(), mode="sequential"
        )
        for kernel in (False, True):
            o2, s2 = delta_scan(q, kn, v, beta, S0, chunk=chunk, kernel=kernel)
            assert rel_rms(o2, o1) < 2e-5 and rel_rms(s2, s1) < 2e-5


def _bench(fn, *args, reps: int = 20) -> float:
    fn(*args)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def test_matrix_scans_use_the_kernel_on_cuda() -> None:
    """gla_scan / delta_scan ("auto" and "chunked") on CUDA float32 run the kernels: no
    fallback is logged."""
    from archc.backends.torch.scans.matrix import delta_scan, gla_scan
    from archc.backends.triton.fallback import logged_fallbacks

    B, H, T, dk, dv = 2, 2, 40, 12, 20
    q, k = torch.randn(B, H, T, dk, device=DEV), torch.randn(B, H, T, dk, device=DEV)
    v, lg = torch.randn(B, H, T, dv, device=DEV), _log_decay("normal", (B, H, T, dk))
    beta = torch.rand(B, H, T, device=DEV)
    before = logged_fallbacks()
    for mode in ("auto", "chunked"):
        gla_scan(q, k, v, lg, mode=mode)
        delta_scan(q, F.normalize(k, dim=-1), v, beta, mode=mode)
    new = {kernel for kernel, _ in logged_fallbacks() - before}
    assert not new & {"gla_scan", "delta_scan"}


def test_timing_vs_torch_compile() -> None:
    """Triton forward vs torch.compile of the torch chunked form (not the unrolled loop:
    DESIGN §8, Inductor would unroll it). Printed only."""
    from archc.backends.torch.scans.matrix import gla_scan
    from archc.backends.triton.gla_scan.op import gla_chunked

    B, H, T, dk, dv = 4, 8, 2048, 64, 64
    q, k = torch.randn(B, H, T, dk, device=DEV), torch.randn(B, H, T, dk, device=DEV)
    v = torch.randn(B, H, T, dv, device=DEV)
    lg = _log_decay("normal", (B, H, T, dk))
    compiled = torch.compile(lambda *a: gla_scan(*a, mode="chunked", chunk=64, kernel=False))
    with torch.no_grad():
        t_triton = _bench(gla_chunked, q, k, v, lg)
        t_eager = _bench(
            lambda *a: gla_scan(*a, mode="chunked", chunk=64, kernel=False), q, k, v, lg
        )
        t_comp = _bench(compiled, q, k, v, lg)
    print(
        f"\nGLA fwd B={B} H={H} T={T} dk={dk} dv={dv}: triton {t_triton:.2f} ms, "
        f"torch chunked eager {t_eager:.2f} ms, torch.compile {t_comp:.2f} ms"
    )
