"""The Triton chunked GLA kernel (run by the Triton interpreter on CPU) against naive.py.

Forward output and final state, relative RMS error, outputs pre-filled with NaN to catch
unwritten elements; T not a multiple of the 16-step chunk, dk/dv not powers of two.
Gradients go through op.py's backward, which recomputes with the torch chunked path
(there is no Triton backward kernel yet). The interpreter is slow: shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from archc.backends.triton.gla_scan.naive import gla_naive  # noqa: E402
from archc.backends.triton.gla_scan.op import can_lower, gla_chunked, gla_fwd  # noqa: E402
from archc.backends.triton.testing import rel_rms  # noqa: E402

TOL = 1e-5


def _log_decay(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape)
    return {
        "normal": F.logsigmoid(x + 2.0),
        "near0": torch.log(torch.full(shape, 1e-4)) + 0.1 * x,  # e^-590 per 64 steps
        "near1": torch.full(shape, -1e-6),
        "mixed": F.logsigmoid(10 * x),
    }[kind]


CASES = [
    # (B, T, dk, dv, decay kind, with S0)
    (1, 1, 16, 16, "normal", True),
    (2, 63, 16, 32, "mixed", True),
    (1, 65, 32, 16, "near0", False),
    (1, 65, 16, 16, "near1", True),
    (2, 40, 12, 20, "normal", True),  # dk, dv below one block: masked columns
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


def test_gradients_match_naive() -> None:
    B, T, dk, dv = 1, 33, 16, 16
    ins = [
        torch.randn(B, H, T, dk),
        torch.randn(B, H, T, dk),
        torch.randn(B, H, T, dv),
        _log_decay("mixed", (B, H, T, dk)),
        torch.randn(B, H, dk, dv),
    ]
    ins = [x.requires_grad_() for x in ins]
    go, gS = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)

    def grads(fn):
        o, S = fn(*ins)
        return [o, S, *torch.autograd.grad((o, S), ins, (go, gS))]

    for name, x, r in zip(
        ["o", "S_T", "dq", "dk", "dv", "dlog_g", "dS0"],
        grads(gla_chunked),
        grads(gla_naive),
        strict=True,
    ):
        assert rel_rms(x, r) < TOL, name


def test_linear_attention_and_no_s0() -> None:
    q, k, v = torch.randn(1, H, 20, 16), torch.randn(1, H, 20, 16), torch.randn(1, H, 20, 16)
    o, S = gla_chunked(q, k, v, None)
    ref = (q @ k.transpose(-1, -2)).tril() @ v
    assert rel_rms(o, ref) < TOL
    assert S.dtype == torch.float32


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
