"""The Triton diagonal scan on CUDA: the full matrix against naive.py (skipped without CUDA).

The interpreter tests (tests/numerics/test_triton_diag_scan.py) cannot see bf16, TF32,
real autotuning or large grids; these can.
"""

from __future__ import annotations

import pytest
import torch

from archc.backends.triton.testing import rel_rms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEV = "cuda"


def _decays(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape, device=DEV)
    return {
        "sig": torch.sigmoid(x),
        "sig10": torch.sigmoid(10 * x),
        "sig01": torch.sigmoid(0.1 * x),
        "near0": torch.full(shape, 1e-6, device=DEV),
        "near1": torch.full(shape, 1 - 1e-6, device=DEV),
        "signed": 2 * torch.rand(shape, device=DEV) - 1,
    }[kind]


def _run(a, b, h0, gy):
    from archc.backends.triton.diag_scan.op import diag_scan

    ins = [a, b] + ([h0] if h0 is not None else [])
    h = diag_scan(a, b, h0)
    return h, torch.autograd.grad(h, ins, gy)


def _reference(a, b, h0, gy):
    from archc.backends.triton.diag_scan.naive import diag_scan_naive

    a = a.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    h0 = h0.detach().double().requires_grad_() if h0 is not None else None
    ins = [a, b] + ([h0] if h0 is not None else [])
    h = diag_scan_naive(a, b, h0)
    return h, torch.autograd.grad(h, ins, gy.double())


@pytest.mark.parametrize("T", [1, 63, 257, 1000])
@pytest.mark.parametrize("feat", [(5,), (60,), (256,), (4, 3), (1000,)])
@pytest.mark.parametrize("kind", ["sig", "sig10", "sig01", "near0", "near1", "signed"])
@pytest.mark.parametrize("with_h0", [True, False])
def test_fp32_matrix(T: int, feat: tuple[int, ...], kind: str, with_h0: bool) -> None:
    B = 2
    a = _decays(kind, (B, T, *feat)).requires_grad_()
    b = torch.randn(B, T, *feat, device=DEV, requires_grad=True)
    h0 = torch.randn(B, *feat, device=DEV, requires_grad=True) if with_h0 else None
    gy = torch.randn(B, T, *feat, device=DEV)
    h, grads = _run(a, b, h0, gy)
    ref, refs = _reference(a, b, h0, gy)
    assert torch.isfinite(h).all()
    assert rel_rms(h, ref) < 1e-5
    assert rel_rms(h[:, -1], ref[:, -1]) < 1e-5
    tol = 1e-4 if kind == "near1" else 1e-5
    for name, g, r in zip(["a", "b", "h0"], grads, refs, strict=False):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, r) < tol, f"grad {name}: {rel_rms(g, r):.2e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T", [63, 2048])
def test_half_inputs_accumulate_in_fp32(dtype: torch.dtype, T: int) -> None:
    """Half inputs, fp32 accumulation: error is that of rounding the output, not of T steps."""
    B, D = 3, 200
    a = torch.sigmoid(torch.randn(B, T, D, device=DEV) + 3).to(dtype).requires_grad_()
    b = torch.randn(B, T, D, device=DEV).to(dtype).requires_grad_()
    h0 = torch.randn(B, D, device=DEV).to(dtype).requires_grad_()
    gy = torch.randn(B, T, D, device=DEV).to(dtype)
    h, grads = _run(a, b, h0, gy)
    assert h.dtype == dtype and all(g.dtype == dtype for g in grads)
    ref, refs = _reference(a, b, h0, gy)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert rel_rms(h, ref) < tol
    for name, g, r in zip(["a", "b", "h0"], grads, refs, strict=False):
        assert rel_rms(g, r) < tol, f"grad {name}: {rel_rms(g, r):.2e}"


def test_large_shape() -> None:
    B, T, D = 4, 8192, 1536
    a = torch.sigmoid(torch.randn(B, T, D, device=DEV) + 2).requires_grad_()
    b = torch.randn(B, T, D, device=DEV, requires_grad=True)
    gy = torch.randn(B, T, D, device=DEV)
    h, grads = _run(a, b, None, gy)
    a32, b32 = a.detach().requires_grad_(), b.detach().requires_grad_()
    from archc.backends.triton.diag_scan.naive import diag_scan_naive

    ref = diag_scan_naive(a32, b32)
    refs = torch.autograd.grad(ref, [a32, b32], gy)
    assert rel_rms(h, ref) < 1e-5
    for g, r in zip(grads, refs, strict=True):
        assert rel_rms(g, r) < 1e-5


@pytest.mark.parametrize("with_h0", [True, False])
def test_every_output_element_written(with_h0: bool) -> None:
    from archc.backends.triton.diag_scan.op import diag_scan_bwd, diag_scan_fwd

    B, T, D = 3, 1001, 333
    a = torch.sigmoid(torch.randn(B, T, D, device=DEV))
    b = torch.randn(B, T, D, device=DEV)
    h0 = torch.randn(B, D, device=DEV) if with_h0 else None
    h = torch.full((B, T, D), float("nan"), device=DEV)
    diag_scan_fwd(a, b, h0, h)
    assert not torch.isnan(h).any()
    ga, gb = torch.full_like(a, float("nan")), torch.full_like(b, float("nan"))
    gh0 = torch.full((B, D), float("nan"), device=DEV) if with_h0 else None
    diag_scan_bwd(a, h, h0, torch.randn_like(h), ga, gb, gh0)
    assert not torch.isnan(ga).any() and not torch.isnan(gb).any()
    if gh0 is not None:
        assert not torch.isnan(gh0).any()


@pytest.mark.parametrize("mode", ["auto", "sequential", "associative", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_modes_on_cuda(mode: str, reverse: bool) -> None:
    from archc.backends.torch.scans import linear_scan

    B, T, D = 2, 300, 48
    a = torch.sigmoid(3 * torch.randn(B, T, D, device=DEV)).requires_grad_()
    b = torch.randn(B, T, D, device=DEV, requires_grad=True)
    h0 = torch.randn(B, D, device=DEV, requires_grad=True)
    gy = torch.randn(B, T, D, device=DEV)
    h = linear_scan(a, b, h0, mode=mode, reverse=reverse)
    grads = torch.autograd.grad(h, [a, b, h0], gy)
    flip = (lambda x: x.flip(1)) if reverse else (lambda x: x)
    ref, refs = _reference(flip(a), flip(b), h0, flip(gy))
    assert rel_rms(h, flip(ref)) < 1e-5
    for g, r, name in zip(grads, (flip(refs[0]), flip(refs[1]), refs[2]), "abh", strict=True):
        assert rel_rms(g, r) < 1e-5, name
