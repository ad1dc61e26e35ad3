"""linear_scan (every mode) against a float64 step-by-step Python loop: values and gradients."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch.scans import linear_scan, linear_scan_modes
from archc.backends.triton.testing import rel_rms

MODES = [m for m in linear_scan_modes() if m != "auto"] + ["auto"]
TOL = 2e-5  # relative RMS error of float32 results against the float64 oracle


def _oracle(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t in float64, written independently of the code under test."""
    a, b = a.double(), b.double()
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.double()
    hs = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    return torch.stack(hs, 1)


def _decays(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    u = torch.rand(shape)
    x = torch.randn(shape)
    if kind == "near0":  # 1e-7 .. 1e-5
        return 10 ** (-7 + 2 * u)
    if kind == "near1":  # 1 - (1e-6 .. 1e-4), as close to 1 as float32 resolves well
        return 1 - 10 ** (-6 + 2 * u)
    if kind == "sig10":  # sharp gates: many saturate to ~0 or ~1
        return torch.sigmoid(10 * x)
    if kind == "sig01":  # soft gates near 0.5
        return torch.sigmoid(0.1 * x)
    if kind == "zeros":  # exact zeros (saturated forget gates) mixed with ordinary decays
        return torch.where(u < 0.2, torch.zeros(shape), torch.sigmoid(x))
    if kind == "signed":  # negative decays: supported by every mode
        return 2 * u - 1
    raise AssertionError(kind)


KINDS = ["near0", "near1", "sig10", "sig01", "zeros", "signed"]


def _check(mode: str, T: int, feat: tuple[int, ...], kind: str, with_h0: bool) -> None:
    B = 2
    a = _decays(kind, (B, T, *feat)).requires_grad_()
    b = torch.randn(B, T, *feat, requires_grad=True)
    h0 = torch.randn(B, *feat, requires_grad=True) if with_h0 else None
    gy = torch.randn(B, T, *feat)

    h = linear_scan(a, b, h0, mode=mode, chunk=16)
    assert h.shape == b.shape and h.dtype == torch.float32
    assert torch.isfinite(h).all()
    ins = [a, b] + ([h0] if h0 is not None else [])
    grads = torch.autograd.grad(h, ins, gy, materialize_grads=True)

    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    h064 = h0.detach().double().requires_grad_() if h0 is not None else None
    ref = _oracle(a64, b64, h064)
    ins64 = [a64, b64] + ([h064] if h064 is not None else [])
    refs = torch.autograd.grad(ref, ins64, gy.double(), materialize_grads=True)

    assert rel_rms(h, ref) < TOL, f"value {rel_rms(h, ref):.2e}"
    for name, g, r in zip(["a", "b", "h0"], grads, refs, strict=False):
        assert torch.isfinite(g).all(), name
        err = rel_rms(g, r)
        assert err < TOL * (10 if kind == "near1" else 1), f"grad {name}: {err:.2e}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1, 63, 257])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_float64_loop(mode: str, T: int, kind: str) -> None:
    _check(mode, T, (60,), kind, with_h0=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_h0", [True, False])
def test_multi_dim_features(mode: str, with_h0: bool) -> None:
    _check(mode, 63, (4, 3), "sig10", with_h0)
    _check(mode, 1, (4, 3), "sig01", with_h0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1, 63])
def test_reverse_is_flipped_forward(mode: str, T: int) -> None:
    a = torch.sigmoid(torch.randn(2, T, 7))
    b = torch.randn(2, T, 7)
    h0 = torch.randn(2, 7)
    got = linear_scan(a, b, h0, mode=mode, chunk=8, reverse=True)
    ref = _oracle(a.flip(1), b.flip(1), h0).flip(1)
    assert rel_rms(got, ref) < TOL
    # the reversed recurrence literally: h_t = a_t h_{t+1} + b_t, h_T = h0
    assert torch.allclose(got[:, -1], a[:, -1] * h0 + b[:, -1], atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_h0_none_is_zeros(mode: str) -> None:
    a = torch.sigmoid(torch.randn(3, 20, 5))
    b = torch.randn(3, 20, 5)
    assert torch.allclose(
        linear_scan(a, b, None, mode=mode, chunk=8),
        linear_scan(a, b, torch.zeros(3, 5), mode=mode, chunk=8),
        atol=1e-6,
    )


@pytest.mark.parametrize("chunk", [1, 5, 64, 1000])
def test_chunk_sizes(chunk: int) -> None:
    a = torch.sigmoid(3 * torch.randn(2, 70, 6))
    b = torch.randn(2, 70, 6)
    h0 = torch.randn(2, 6)
    assert rel_rms(linear_scan(a, b, h0, mode="chunked", chunk=chunk), _oracle(a, b, h0)) < TOL


def test_extreme_inputs_stay_finite() -> None:
    """Exact zeros and ones, tiny decays over long spans, zero inputs: no NaN/inf anywhere."""
    T = 257
    a = torch.cat([torch.zeros(1, T, 4), torch.ones(1, T, 4), torch.full((1, T, 4), 1e-30)])
    b = torch.cat([torch.zeros(1, T, 4), torch.randn(2, T, 4)])
    for mode in MODES:
        aa = a.clone().requires_grad_()
        bb = b.clone().requires_grad_()
        h = linear_scan(aa, bb, torch.ones(3, 4), mode=mode)
        h.sum().backward()
        assert torch.isfinite(h).all() and torch.isfinite(aa.grad).all(), mode
        assert rel_rms(h, _oracle(a, b, torch.ones(3, 4))) < TOL, mode


def test_bf16_accumulates_in_float32() -> None:
    a = torch.sigmoid(torch.randn(2, 300, 8) + 4).bfloat16()
    b = torch.randn(2, 300, 8).bfloat16()
    ref = _oracle(a.float(), b.float(), None)
    for mode in MODES:
        h = linear_scan(a, b, mode=mode)
        assert h.dtype == torch.bfloat16
        assert rel_rms(h.float(), ref) < 1e-2, mode


def test_double_backward() -> None:
    a = torch.sigmoid(torch.randn(2, 10, 3, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 10, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    for mode in ("chunked", "associative"):
        fn = lambda a, b, h0, m=mode: linear_scan(a, b, h0, mode=m, chunk=4)  # noqa: E731
        assert torch.autograd.gradgradcheck(fn, (a, b, h0))


def test_rejects_bad_arguments() -> None:
    a = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="unknown mode"):
        linear_scan(a, a, mode="nope")
    with pytest.raises(ValueError, match="differ"):
        linear_scan(a, a[:, :4])
    with pytest.raises(ValueError, match="h0"):
        linear_scan(a, a, torch.zeros(2, 4))
