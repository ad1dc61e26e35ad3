"""The Triton chunked GLA kernel (run by the Triton interpreter on CPU) against naive.py.

Forward output, final state and every gradient (dq, dk, dv, dlog_g, dS0) of the Triton
backward kernels, relative RMS error against the float64 loop, outputs pre-filled with
NaN to catch unwritten elements; T not a multiple of the 16-step chunk, dk/dv not powers
of two, gate extremes (log decays scaled by 0.1 and 10, decays near 0 and near 1). The
interpreter is slow: shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from archc.backends.triton.fallback import logged_fallbacks  # noqa: E402
from archc.backends.triton.gla_scan.naive import gla_naive  # noqa: E402
from archc.backends.triton.gla_scan.op import (  # noqa: E402
    can_lower,
    gla_bwd,
    gla_chunked,
    gla_fwd,
)
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5
GRAD_TOL = 2e-5


def _log_decay(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape)
    return {
        "normal": F.logsigmoid(x + 2.0),
        "near0": torch.log(torch.full(shape, 1e-4)) + 0.1 * x,  # e^-590 per 64 steps
        "near1": torch.full(shape, -1e-6),
        "mixed": F.logsigmoid(10 * x),
        "x0.1": 0.1 * F.logsigmoid(x + 2.0),  # gate extremes: decays g^0.1 ...
        "x10": 10.0 * F.logsigmoid(x + 2.0),  # ... and g^10
    }[kind]


CASES = [
    # (B, T, dk, dv, decay kind, with S0)
    (1, 1, 16, 16, "normal", True),
    (2, 63, 16, 32, "mixed", True),
    (1, 65, 32, 16, "near0", False),
    (1, 65, 16, 16, "near1", True),
    (2, 40, 12, 20, "normal", True),  # dk, dv below one block: masked columns
    (1, 257, 8, 8, "x10", True),
    (1, 63, 8, 8, "x0.1", False),
]
H = 2


@pytest.mark.parametrize(("B", "T", "dk", "dv", "kind", "with_s0"), CASES)
def test_forward_matches_naive(B: int, T: int, dk: int, dv: int, kind: str, with_s0: bool) -> None:
    q, k = torch.randn(B, H, T, dk), torch.randn(B, H, T, dk)
    v = torch.randn(B, H, T, dv)
    log_g = _log_decay(kind, (B, H, T, dk))
    S0 = torch.randn(B, H, dk, dv) if with_s0 else None
    o = torch.full((B, H, T, dv), float("nan"))
    S_T = torch.full((B, H, dk, dv), float("nan"))
    gla_fwd(q, k, v, log_g, S0, o, S_T)
    o_ref, S_ref = gla_naive(q, k, v, log_g, S0)
    assert torch.isfinite(o).all() and torch.isfinite(S_T).all()
    assert rel_rms(o, o_ref) < TOL
    assert rel_rms(S_T, S_ref) < TOL


def _inputs(B: int, T: int, dk: int, dv: int, kind: str, with_s0: bool) -> list[torch.Tensor]:
    ins = [
        torch.randn(B, H, T, dk),
        torch.randn(B, H, T, dk),
        torch.randn(B, H, T, dv),
        _log_decay(kind, (B, H, T, dk)),
    ]
    return ins + ([torch.randn(B, H, dk, dv)] if with_s0 else [])


GRAD_CASES = [
    # (B, T, dk, dv, decay kind, with S0)
    (1, 1, 16, 16, "normal", True),
    (1, 63, 12, 20, "mixed", True),  # odd dk, dv: masked columns; two value blocks
    (1, 63, 8, 8, "x10", True),
    (1, 63, 8, 8, "x0.1", False),
    (1, 40, 16, 16, "near0", True),
    (1, 33, 16, 16, "near1", True),
    (1, 257, 8, 8, "normal", True),
]


@pytest.mark.parametrize(("B", "T", "dk", "dv", "kind", "with_s0"), GRAD_CASES)
def test_gradients_match_naive(B: int, T: int, dk: int, dv: int, kind: str, with_s0: bool) -> None:
    """Every gradient of the Triton backward (float32) against the float64 loop."""
    ins = [x.requires_grad_() for x in _inputs(B, T, dk, dv, kind, with_s0)]
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    o, S = gla_chunked(*ins)
    got = torch.autograd.grad((o, S), ins, (go, gS))
    o_r, S_r = gla_naive(*ref_ins)
    ref = torch.autograd.grad((o_r, S_r), ref_ins, (go.double(), gS.double()))
    names = ["dq", "dk", "dv", "dlog_g", "dS0"]
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL
    for name, g, r in zip(names, got, ref, strict=False):
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        assert rel_rms(g, r) < GRAD_TOL, name


@pytest.mark.parametrize("with_s0", [True, False])
def test_backward_writes_every_element(with_s0: bool) -> None:
    """gla_bwd into NaN-filled buffers (dS0 is written even without S0)."""
    B, T, dk, dv = 1, 40, 12, 20
    q, k, v, lg, *rest = _inputs(B, T, dk, dv, "mixed", with_s0)
    S0 = rest[0] if rest else None
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    bufs = [torch.full_like(x, float("nan")) for x in (q, k, v, lg)]
    dS0 = torch.full((B, H, dk, dv), float("nan"))
    gla_bwd(q, k, v, lg, S0, go, gS, *bufs, dS0)
    for name, g in zip(["dq", "dk", "dv", "dlog_g", "dS0"], [*bufs, dS0], strict=True):
        assert torch.isfinite(g).all(), name


def test_op_allocations_are_fully_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autograd op allocates its outputs with torch.empty / empty_like: make those
    NaN-filled so an element the kernels leave unwritten shows up."""
    B, T, dk, dv = 1, 21, 12, 20
    ins = [x.requires_grad_() for x in _inputs(B, T, dk, dv, "normal", True)]
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    monkeypatch.setattr(
        torch, "empty_like", lambda *a, **kw: real_empty_like(*a, **kw).fill_(float("nan"))
    )
    o, S = gla_chunked(*ins)
    grads = torch.autograd.grad((o, S), ins, (go, gS))
    monkeypatch.undo()
    for x in (o, S, *grads):
        assert torch.isfinite(x).all()
    o_r, S_r = gla_naive(*(x.detach().double() for x in ins))
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL


def test_matrix_scan_routes_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """matrix.gla_scan's kernel hook: a refusal is logged; an accepted shape runs the
    kernel (can_lower patched to accept the CPU so the interpreter runs it)."""
    from archc.backends.torch.scans import matrix
    from archc.backends.triton import matrix_ops

    q, k, v, lg, S0 = _inputs(1, 20, 12, 20, "normal", True)
    assert matrix._try_triton("gla", q, k, v, lg, S0) is None
    assert ("gla_scan", "device is cpu, the kernel needs CUDA") in logged_fallbacks()
    monkeypatch.setattr(matrix_ops, "can_lower", lambda *a: (True, "ok"))
    o, S = matrix._try_triton("gla", q, k, v, lg, S0)
    o_r, S_r = gla_naive(*(x.double() for x in (q, k, v, lg, S0)))
    assert rel_rms(o, o_r) < TOL and rel_rms(S, S_r) < TOL


def test_linear_attention_and_no_s0() -> None:
    q, k, v = torch.randn(1, H, 20, 16), torch.randn(1, H, 20, 16), torch.randn(1, H, 20, 16)
    o, S = gla_chunked(q, k, v, None)
    ref = (q @ k.transpose(-1, -2)).tril() @ v
    assert rel_rms(o, ref) < TOL
    assert S.dtype == torch.float32


@pytest.mark.parametrize("with_s0", [True, False])
def test_custom_op_registration(with_s0: bool) -> None:
    """torch.ops.archc.gla_fwd: schema, fake impl, registered autograd, AOT dispatch
    (what torch.compile relies on to trace around the kernels)."""
    q, k, v = torch.randn(1, H, 20, 12), torch.randn(1, H, 20, 12), torch.randn(1, H, 20, 20)
    S0 = torch.randn(1, H, 12, 20).requires_grad_() if with_s0 else None
    args = (q, F.normalize(k, dim=-1), v, _log_decay("normal", (1, H, 20, 12)))
    args = (*(x.requires_grad_() for x in args), S0)
    torch.library.opcheck(torch.ops.archc.gla_fwd.default, args)


def test_can_lower_reasons() -> None:
    shape = (2, 4, 128, 64, 64)
    assert can_lower("cpu", torch.float32, shape) == (
        False,
        "device is cpu, the kernel needs CUDA",
    )
    assert can_lower("cuda", torch.float32, shape) == (True, "ok")
    ok, why = can_lower("cuda", torch.float64, shape)
    assert not ok and "dtype" in why
    ok, why = can_lower("cuda", torch.float32, (2, 4, 128, 256, 64))
    assert not ok and "dk=256" in why
    ok, why = can_lower("cuda", torch.float32, (2, 4, 0, 64, 64))
    assert not ok and "empty" in why
