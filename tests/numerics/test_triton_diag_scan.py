"""The Triton diagonal scan (run by the Triton interpreter on CPU) against naive.py.

Forward, every gradient and the final state, relative RMS error; odd feature counts that
are not a multiple of the block; outputs pre-filled with NaN to catch unwritten elements.
The interpreter costs ~1 ms per (program, time step), so the shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from archc.backends.triton.diag_scan.naive import diag_scan_naive  # noqa: E402
from archc.backends.triton.diag_scan.op import (  # noqa: E402
    can_lower,
    diag_scan,
    diag_scan_bwd,
    diag_scan_fwd,
)
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5


def _decays(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape)
    return {
        "sig": torch.sigmoid(x),
        "sig10": torch.sigmoid(10 * x),  # saturated gates: ~0 and ~1
        "sig01": torch.sigmoid(0.1 * x),
        "near0": torch.full(shape, 1e-6),
        "near1": torch.full(shape, 1 - 1e-6),
        "signed": 2 * torch.rand(shape) - 1,
    }[kind]


CASES = [
    # (B, T, features, decay kind, with h0)
    (2, 1, (5,), "sig", True),
    (2, 63, (60,), "sig10", True),  # 60 = one full block of 32 and a partial one
    (2, 63, (37,), "sig01", False),
    (1, 257, (5,), "near1", True),
    (2, 257, (5,), "near0", False),
    (2, 40, (4, 3), "signed", True),
]


@pytest.mark.parametrize(("B", "T", "feat", "kind", "with_h0"), CASES)
def test_matches_naive(B: int, T: int, feat: tuple[int, ...], kind: str, with_h0: bool) -> None:
    a = _decays(kind, (B, T, *feat)).requires_grad_()
    b = torch.randn(B, T, *feat, requires_grad=True)
    h0 = torch.randn(B, *feat, requires_grad=True) if with_h0 else None
    gy = torch.randn(B, T, *feat)
    ins = [a, b] + ([h0] if h0 is not None else [])

    h = diag_scan(a, b, h0)
    grads = torch.autograd.grad(h, ins, gy)
    ref = diag_scan_naive(a, b, h0)
    refs = torch.autograd.grad(ref, ins, gy)

    assert h.shape == b.shape and torch.isfinite(h).all()
    assert rel_rms(h, ref) < TOL
    assert rel_rms(h[:, -1], ref[:, -1]) < TOL  # final state
    for name, g, r in zip(["a", "b", "h0"], grads, refs, strict=False):
        assert torch.isfinite(g).all(), name
        assert rel_rms(g, r) < TOL, f"grad {name}: {rel_rms(g, r):.2e}"


@pytest.mark.parametrize("with_h0", [True, False])
def test_every_output_element_written(with_h0: bool) -> None:
    """Launch into NaN-filled buffers: any element the kernels skip stays NaN."""
    B, T, D = 2, 35, 37  # T not a multiple of the chunk, D not of the block
    a = torch.sigmoid(torch.randn(B, T, D))
    b = torch.randn(B, T, D)
    h0 = torch.randn(B, D) if with_h0 else None
    h = torch.full((B, T, D), float("nan"))
    diag_scan_fwd(a, b, h0, h)
    assert not torch.isnan(h).any()
    assert rel_rms(h, diag_scan_naive(a, b, h0)) < TOL

    gh = torch.randn(B, T, D)
    ga, gb = torch.full_like(a, float("nan")), torch.full_like(b, float("nan"))
    gh0 = torch.full((B, D), float("nan")) if with_h0 else None
    diag_scan_bwd(a, h, h0, gh, ga, gb, gh0)
    assert not torch.isnan(ga).any() and not torch.isnan(gb).any()
    if gh0 is not None:
        assert not torch.isnan(gh0).any()


def test_can_lower_reasons() -> None:
    ok, reason = can_lower("cpu", torch.float32, (2, 8, 4))
    assert not ok and "CUDA" in reason
    ok, reason = can_lower("cuda", torch.float64, (2, 8, 4))
    assert not ok and "float64" in reason
    assert can_lower("cuda", torch.bfloat16, (2, 8, 4)) == (True, "ok")
