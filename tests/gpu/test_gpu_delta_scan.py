"""The Triton chunked delta rule on CUDA: the full matrix (skipped without CUDA).

The interpreter tests (tests/numerics/test_triton_delta_scan.py) cannot see bf16,
real autotuning, register pressure of the (BT, BK) tiles or large grids; these can.
Forward, final state and every gradient against the float64 loop of naive.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archc.backends.triton.testing import rel_rms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEV = "cuda"


def _beta(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    return {
        "rand": torch.rand(shape, device=DEV),
        "zero": torch.zeros(shape, device=DEV),
        "one": torch.ones(shape, device=DEV),
        "mixed": (torch.rand(shape, device=DEV) > 0.5).float(),
    }[kind]


def _inputs(B: int, H: int, T: int, dk: int, dv: int, beta: str) -> list[torch.Tensor]:
    return [
        torch.randn(B, H, T, dk, device=DEV),
        F.normalize(torch.randn(B, H, T, dk, device=DEV), dim=-1),  # as DeltaNet
        torch.randn(B, H, T, dv, device=DEV),
        _beta(beta, (B, H, T)),
        torch.randn(B, H, dk, dv, device=DEV),
    ]


CASES = [
    (T, dk, dv, beta)
    for T in (1, 63, 257)
    for dk, dv in ((12, 20), (64, 64), (128, 96))
    for beta in ("rand", "zero", "one", "mixed")
]


@pytest.mark.parametrize(("T", "dk", "dv", "beta"), CASES)
def test_triton_delta_matches_naive(T: int, dk: int, dv: int, beta: str) -> None:
    from archc.backends.triton.delta_scan.naive import delta_naive
    from archc.backends.triton.delta_scan.op import delta_chunked, delta_fwd

    B, H = 2, 3
    ins = _inputs(B, H, T, dk, dv, beta)
    o = torch.full((B, H, T, dv), float("nan"), device=DEV)
    S = torch.full((B, H, dk, dv), float("nan"), device=DEV)
    delta_fwd(*ins, o, S)
    o_ref, S_ref = delta_naive(*(x.double() for x in ins))
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert rel_rms(o, o_ref) < 1e-5
    assert rel_rms(S, S_ref) < 1e-5

    ins = [x.requires_grad_() for x in ins]
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    go, gS = torch.randn_like(o), torch.randn_like(S)
    got = torch.autograd.grad(delta_chunked(*ins), ins, (go, gS))
    ref = torch.autograd.grad(delta_naive(*ref_ins), ref_ins, (go.double(), gS.double()))
    for name, g, r in zip(["dq", "dk", "dv", "dbeta", "dS0"], got, ref, strict=True):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, r) < 1e-4, name


@pytest.mark.parametrize("with_s0", [True, False])
def test_triton_delta_backward_writes_every_element(with_s0: bool) -> None:
    from archc.backends.triton.delta_scan.op import delta_bwd

    B, H, T, dk, dv = 2, 3, 100, 96, 80
    q, k, v, beta, S0 = _inputs(B, H, T, dk, dv, "rand")
    go, gS = torch.randn(B, H, T, dv, device=DEV), torch.randn(B, H, dk, dv, device=DEV)
    bufs = [torch.full_like(x, float("nan")) for x in (q, k, v, beta)]
    dS0 = torch.full((B, H, dk, dv), float("nan"), device=DEV)
    delta_bwd(q, k, v, beta, S0 if with_s0 else None, go, gS, *bufs, dS0)
    for name, g in zip(["dq", "dk", "dv", "dbeta", "dS0"], [*bufs, dS0], strict=True):
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_delta_half_inputs(dtype: torch.dtype) -> None:
    from archc.backends.triton.delta_scan.naive import delta_naive
    from archc.backends.triton.delta_scan.op import delta_chunked

    B, H, T, dk, dv = 2, 4, 200, 64, 64
    half = [x.to(dtype).requires_grad_() for x in _inputs(B, H, T, dk, dv, "rand")[:4]]
    o, S = delta_chunked(*half)
    ref_ins = [x.detach().float().requires_grad_() for x in half]
    o_ref, S_ref = delta_naive(*ref_ins)
    assert o.dtype == dtype and S.dtype == torch.float32
    assert rel_rms(o, o_ref) < 2e-2 and rel_rms(S, S_ref) < 1e-4
    go, gS = torch.randn_like(o), torch.randn_like(S)
    got = torch.autograd.grad((o, S), half, (go, gS))
    ref = torch.autograd.grad((o_ref, S_ref), ref_ins, (go.float(), gS))
    for g, r, x in zip(got, ref, half, strict=True):
        assert g.dtype == x.dtype and torch.isfinite(g).all()
        assert rel_rms(g, r) < 2e-2


def test_large_grid() -> None:
    """Many batch-heads and a long sequence: int64 offsets, many chunks."""
    from archc.backends.triton.delta_scan.naive import delta_naive
    from archc.backends.triton.delta_scan.op import delta_chunked

    B, H, T, dk, dv = 8, 16, 1024, 64, 64
    ins = _inputs(B, H, T, dk, dv, "rand")
    o, S = delta_chunked(*ins)
    o_ref, S_ref = delta_naive(*(x[:1, :2].double() for x in ins))
    assert rel_rms(o[:1, :2], o_ref) < 1e-5 and rel_rms(S[:1, :2], S_ref) < 1e-5
