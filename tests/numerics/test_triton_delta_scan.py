"""The Triton chunked delta-rule kernels (run by the Triton interpreter on CPU) against
naive.py: forward output, final state and every gradient (dq, dk, dv, dbeta, dS0), the
float32 kernels against the float64 loop by relative RMS error. T in {1, 63, 257} (not
multiples of the 16-step chunk), dk = 12 (masked to a 16-wide tile), beta at 0 and 1,
keys L2-normalised as DeltaNet uses them, outputs pre-filled with NaN to catch unwritten
elements. The interpreter is slow: shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from archc.backends.torch.scans.matrix import delta_scan  # noqa: E402
from archc.backends.triton.delta_scan.naive import delta_naive  # noqa: E402
from archc.backends.triton.delta_scan.op import (  # noqa: E402
    can_lower,
    delta_bwd,
    delta_chunked,
    delta_fwd,
)
from archc.backends.triton.fallback import logged_fallbacks  # noqa: E402
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5
GRAD_TOL = 2e-5
H = 2


def _beta(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    return {
        "rand": torch.rand(shape),
        "zero": torch.zeros(shape),  # no writes: S stays S0
        "one": torch.ones(shape),  # full overwrite of the key's slot each step
        "mixed": (torch.rand(shape) > 0.5).float(),  # 0s and 1s interleaved
    }[kind]


def _inputs(B: int, T: int, dk: int, dv: int, beta: str, with_s0: bool) -> list[torch.Tensor]:
    ins = [
        torch.randn(B, H, T, dk),
        F.normalize(torch.randn(B, H, T, dk), dim=-1),
        torch.randn(B, H, T, dv),
        _beta(beta, (B, H, T)),
    ]
    return ins + ([torch.randn(B, H, dk, dv)] if with_s0 else [])


CASES = [
    # (B, T, dk, dv, beta kind, with S0)
    (1, 1, 8, 8, "rand", True),
    (1, 63, 8, 8, "rand", True),
    (1, 63, 12, 20, "mixed", False),  # odd dk, dv: masked columns; two value blocks
    (1, 40, 8, 8, "zero", True),
    (1, 40, 8, 8, "one", True),
    # 17 chunks: the slowest case under the interpreter (still run in CI).
    pytest.param(1, 257, 8, 8, "rand", True, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("B", "T", "dk", "dv", "beta", "with_s0"), CASES)
def test_forward_matches_naive(B: int, T: int, dk: int, dv: int, beta: str, with_s0: bool) -> None:
    q, k, v, b, *rest = _inputs(B, T, dk, dv, beta, with_s0)
    S0 = rest[0] if rest else None
    o = torch.full((B, H, T, dv), float("nan"))
    S_T = torch.full((B, H, dk, dv), float("nan"))
    delta_fwd(q, k, v, b, S0, o, S_T)
    o_ref, S_ref = delta_naive(*(x.double() for x in (q, k, v, b)), S0)
    assert torch.isfinite(o).all() and torch.isfinite(S_T).all()
    assert rel_rms(o, o_ref) < TOL
    assert rel_rms(S_T, S_ref) < TOL


@pytest.mark.parametrize(("B", "T", "dk", "dv", "beta", "with_s0"), CASES)
def test_gradients_match_naive(B: int, T: int, dk: int, dv: int, beta: str, with_s0: bool) -> None:
    """Every gradient of the Triton backward (float32) against the float64 loop."""
    ins = [x.requires_grad_() for x in _inputs(B, T, dk, dv, beta, with_s0)]
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    o, S = delta_chunked(*ins)
    got = torch.autograd.grad((o, S), ins, (go, gS))
    o_r, S_r = delta_naive(*ref_ins)
    ref = torch.autograd.grad((o_r, S_r), ref_ins, (go.double(), gS.double()))
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL
    for name, g, r in zip(["dq", "dk", "dv", "dbeta", "dS0"], got, ref, strict=False):
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        # beta = 0 makes dk exactly 0; rel_rms's floor keeps that comparable.
        assert rel_rms(g, r) < GRAD_TOL, name


@pytest.mark.parametrize("with_s0", [True, False])
def test_backward_writes_every_element(with_s0: bool) -> None:
    """delta_bwd into NaN-filled buffers (dS0 is written even without S0)."""
    B, T, dk, dv = 1, 40, 12, 20
    q, k, v, b, *rest = _inputs(B, T, dk, dv, "rand", with_s0)
    S0 = rest[0] if rest else None
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    bufs = [torch.full_like(x, float("nan")) for x in (q, k, v, b)]
    dS0 = torch.full((B, H, dk, dv), float("nan"))
    delta_bwd(q, k, v, b, S0, go, gS, *bufs, dS0)
    for name, g in zip(["dq", "dk", "dv", "dbeta", "dS0"], [*bufs, dS0], strict=True):
        assert torch.isfinite(g).all(), name


def test_op_allocations_are_fully_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autograd op allocates its outputs with torch.empty / empty_like: make those
    NaN-filled so an element the kernels leave unwritten shows up."""
    B, T, dk, dv = 1, 21, 12, 20
    ins = [x.requires_grad_() for x in _inputs(B, T, dk, dv, "rand", True)]
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    monkeypatch.setattr(
        torch, "empty_like", lambda *a, **kw: real_empty_like(*a, **kw).fill_(float("nan"))
    )
    o, S = delta_chunked(*ins)
    grads = torch.autograd.grad((o, S), ins, (go, gS))
    monkeypatch.undo()
    for x in (o, S, *grads):
        assert torch.isfinite(x).all()
    o_r, S_r = delta_naive(*(x.detach().double() for x in ins))
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL


def test_naive_matches_torch_sequential() -> None:
    """The reference agrees with matrix.delta_scan's own loop (two independent loops)."""
    ins = [x.double() for x in _inputs(1, 9, 6, 5, "rand", True)]
    o1, s1 = delta_naive(*ins)
    o2, s2 = delta_scan(*ins, mode="sequential")
    assert rel_rms(o1, o2) < 1e-12 and rel_rms(s1, s2) < 1e-12


def test_matrix_scan_routes_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """matrix.delta_scan's kernel hook: a refusal is logged; an accepted shape runs the
    kernel (can_lower patched to accept the CPU so the interpreter runs it)."""
    from archc.backends.torch.scans import matrix
    from archc.backends.triton import matrix_ops

    q, k, v, b, S0 = _inputs(1, 20, 12, 20, "rand", True)
    assert matrix._try_triton("delta", q, k, v, b, S0) is None
    assert ("delta_scan", "device is cpu, the kernel needs CUDA") in logged_fallbacks()
    monkeypatch.setattr(matrix_ops, "can_lower", lambda *a: (True, "ok"))
    o, S = matrix._try_triton("delta", q, k, v, b, S0)
    o_r, S_r = delta_naive(*(x.double() for x in (q, k, v, b, S0)))
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL


@pytest.mark.parametrize("with_s0", [True, False])
def test_custom_op_registration(with_s0: bool) -> None:
    """torch.ops.archc.delta_fwd: schema, fake impl, registered autograd, AOT dispatch
    (what torch.compile relies on to trace around the kernels)."""
    q, k, v = torch.randn(1, H, 20, 12), torch.randn(1, H, 20, 12), torch.randn(1, H, 20, 20)
    S0 = torch.randn(1, H, 12, 20).requires_grad_() if with_s0 else None
    args = (q, F.normalize(k, dim=-1), v, torch.rand(1, H, 20))
    args = (*(x.requires_grad_() for x in args), S0)
    torch.library.opcheck(torch.ops.archc.delta_fwd.default, args)


def test_can_lower_reasons() -> None:
    shape = (2, 4, 128, 64, 64)
    assert can_lower("cpu", torch.float32, shape) == (
        False,
        "device is cpu, the kernel needs CUDA",
    )
    assert can_lower("cuda", torch.float32, shape) == (True, "ok")
    assert can_lower("cuda", torch.bfloat16, shape) == (True, "ok")
    ok, why = can_lower("cuda", torch.float64, shape)
    assert not ok and "dtype" in why
    ok, why = can_lower("cuda", torch.float32, (2, 4, 128, 256, 64))
    assert not ok and "dk=256" in why
    ok, why = can_lower("cuda", torch.float32, (2, 4, 0, 64, 64))
    assert not ok and "empty" in why
    ok, why = can_lower("cuda", torch.float32, (2, 4, 128, 64))
    assert not ok and "(B, H, T, dk, dv)" in why
    ok, why = can_lower("cuda", torch.float32, (256, 256, 16, 64, 64))
    assert not ok and "B*H" in why
