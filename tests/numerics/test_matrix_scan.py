"""Matrix-state scans (GLA, delta rule) in torch: chunked vs sequential vs a float64 loop.

The oracle is an independent step-by-step float64 Python loop written with explicit
matrices (``diag(g) S``, ``(I - beta k^T k) S``). The scans run in float32 and are compared
by relative RMS error: outputs, final state and the gradients wrt every input.
Decay extremes: g ~ 1e-4 (a chunk's cumulative decay far below fp32's exp range) and
g ~ 1 - 1e-6; odd dk/dv (12, 20), T in {1, 63, 257}, chunks of 16 and 64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archc.backends.torch.scans.matrix import delta_scan, gla_scan, matrix_scan_modes
from archc.backends.triton.testing import rel_rms

B, H, DK, DV = 1, 2, 12, 20


def _gla_loop64(q, k, v, log_g, S0):
    """Float64 oracle: S_t = diag(g_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t."""
    q, k, v, log_g, S0 = (x.double() for x in (q, k, v, log_g, S0))
    S, outs = S0, []
    for t in range(q.shape[2]):
        G = torch.diag_embed(log_g[:, :, t].exp())  # (B, H, dk, dk)
        S = G @ S + k[:, :, t, :, None] @ v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ S).squeeze(-2))
    return torch.stack(outs, 2), S


def _delta_loop64(q, k, v, beta, S0):
    """Float64 oracle: S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t."""
    q, k, v, beta, S0 = (x.double() for x in (q, k, v, beta, S0))
    eye = torch.eye(q.shape[-1], dtype=torch.float64)
    S, outs = S0, []
    for t in range(q.shape[2]):
        kk = k[:, :, t, :, None] @ k[:, :, t, None, :]
        b = beta[:, :, t, None, None]
        S = (eye - b * kk) @ S + b * (k[:, :, t, :, None] @ v[:, :, t, None, :])
        outs.append((q[:, :, t, None, :] @ S).squeeze(-2))
    return torch.stack(outs, 2), S


def _log_decay(kind: str, T: int) -> torch.Tensor:
    x = torch.randn(B, H, T, DK)
    if kind == "normal":
        return F.logsigmoid(x + 2.0)
    if kind == "near0":  # g ~ 1e-4: 64 steps multiply to e^-590, far past fp32's range
        return math.log(1e-4) + 0.1 * x
    if kind == "near1":  # g ~ 1 - 1e-6
        return torch.full((B, H, T, DK), -1e-6)
    if kind == "mixed":  # saturated per-dimension gates, ~0 and ~1 side by side
        return F.logsigmoid(10 * x)
    raise ValueError(kind)


def _inputs(T: int, kind: str, delta: bool) -> list[torch.Tensor]:
    q = torch.randn(B, H, T, DK)
    k = torch.randn(B, H, T, DK)
    v = torch.randn(B, H, T, DV)
    if delta:
        k = F.normalize(k, dim=-1)
        gate = {
            "normal": torch.sigmoid(torch.randn(B, H, T)),
            "near1": torch.full((B, H, T), 0.999),
        }
        gate["near0"] = torch.full((B, H, T), 1e-4)
        third = gate[kind]
    else:
        third = _log_decay(kind, T)
    S0 = torch.randn(B, H, DK, DV)
    return [x.requires_grad_() for x in (q, k, v, third, S0)]


def _value_and_grads(fn, ins, go, gS):
    o, S = fn(*ins)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    grads = torch.autograd.grad((o, S), ins, (go.to(o.dtype), gS.to(S.dtype)))
    return [o, S, *grads]


NAMES = ["o", "S_T", "dq", "dk", "dv", "d_gate", "dS0"]
GLA_CASES = [
    (1, 16, "normal"),
    (63, 16, "normal"),
    (63, 64, "near0"),
    (257, 16, "near0"),
    (257, 64, "near1"),
    (63, 16, "mixed"),
]


@pytest.mark.parametrize(("T", "chunk", "kind"), GLA_CASES)
def test_gla_matches_float64_loop(T: int, chunk: int, kind: str) -> None:
    ins = _inputs(T, kind, delta=False)
    go, gS = torch.randn(B, H, T, DV), torch.randn(B, H, DK, DV)
    ref = _value_and_grads(_gla_loop64, ins, go, gS)
    for mode in matrix_scan_modes():
        got = _value_and_grads(lambda *a, m=mode: gla_scan(*a, mode=m, chunk=chunk), ins, go, gS)
        for name, x, r in zip(NAMES, got, ref, strict=True):
            assert torch.isfinite(x).all(), (mode, name)
            err = rel_rms(x, r)
            assert err < 2e-5, f"{mode} {name}: rel rms {err:.2e}"


DELTA_CASES = [
    (1, 16, "normal"),
    (63, 16, "normal"),
    (257, 64, "normal"),
    (257, 16, "near1"),
    (63, 64, "near0"),
]


@pytest.mark.parametrize(("T", "chunk", "kind"), DELTA_CASES)
def test_delta_matches_float64_loop(T: int, chunk: int, kind: str) -> None:
    ins = _inputs(T, kind, delta=True)
    go, gS = torch.randn(B, H, T, DV), torch.randn(B, H, DK, DV)
    ref = _value_and_grads(_delta_loop64, ins, go, gS)
    for mode in matrix_scan_modes():
        got = _value_and_grads(lambda *a, m=mode: delta_scan(*a, mode=m, chunk=chunk), ins, go, gS)
        for name, x, r in zip(NAMES, got, ref, strict=True):
            assert torch.isfinite(x).all(), (mode, name)
            err = rel_rms(x, r)
            assert err < 2e-5, f"{mode} {name}: rel rms {err:.2e}"


@pytest.mark.parametrize("fn", [gla_scan, delta_scan])
def test_float64_chunked_is_exact(fn) -> None:
    """In float64 the chunked algebra must agree with the loop to rounding."""
    ins = [x.detach().double() for x in _inputs(70, "normal", delta=fn is delta_scan)]
    loop = _delta_loop64 if fn is delta_scan else _gla_loop64
    o_ref, S_ref = loop(*ins)
    o, S = fn(*ins, mode="chunked", chunk=32)
    assert o.dtype == torch.float64 and S.dtype == torch.float64
    assert rel_rms(o, o_ref) < 1e-12 and rel_rms(S, S_ref) < 1e-12


@pytest.mark.parametrize("fn", [gla_scan, delta_scan])
@pytest.mark.parametrize("mode", ["sequential", "chunked"])
def test_streaming_equals_full(fn, mode: str) -> None:
    """Running piece by piece with the carried state equals one full run."""
    q, k, v, third, S0 = (x.detach() for x in _inputs(100, "normal", delta=fn is delta_scan))
    o_full, S_full = fn(q, k, v, third, S0, mode="chunked", chunk=16)
    S, outs = S0, []
    for lo, hi in [(0, 1), (1, 17), (17, 50), (50, 100)]:
        o, S = fn(
            q[:, :, lo:hi],
            k[:, :, lo:hi],
            v[:, :, lo:hi],
            third[:, :, lo:hi],
            S,
            mode=mode,
            chunk=16,
        )
        outs.append(o)
    assert rel_rms(torch.cat(outs, 2), o_full) < 1e-5
    assert rel_rms(S, S_full) < 1e-5


def test_linear_attention_special_case() -> None:
    """log_g = None is plain (causal, unnormalised) linear attention: o = tril(Q K^T) V."""
    q, k, v = torch.randn(B, H, 40, DK), torch.randn(B, H, 40, DK), torch.randn(B, H, 40, DV)
    o, S = gla_scan(q, k, v, None, chunk=16)
    ref = (q @ k.transpose(-1, -2)).tril() @ v
    assert rel_rms(o, ref) < 1e-5
    assert rel_rms(S, k.transpose(-1, -2) @ v) < 1e-5


def test_gla_extreme_decay_no_overflow() -> None:
    """g ~ 1e-30 per step (log_g = -69): products reach e^-4400, exp must never overflow."""
    q, k, v = torch.randn(B, H, 64, DK), torch.randn(B, H, 64, DK), torch.randn(B, H, 64, DV)
    log_g = torch.full((B, H, 64, DK), -69.0, requires_grad=True)
    o, S = gla_scan(q, k, v, log_g, chunk=64)
    # With such decay the state is just the last outer product.
    assert rel_rms(o, (q * k).sum(-1, keepdim=True) * v) < 1e-5
    (o.sum() + S.sum()).backward()
    assert torch.isfinite(log_g.grad).all()


def test_rejects_bad_arguments() -> None:
    q = torch.randn(B, H, 5, DK)
    with pytest.raises(ValueError, match="unknown mode"):
        gla_scan(q, q, q, None, mode="associative")
    with pytest.raises(ValueError, match="S0"):
        gla_scan(q, q, q, None, torch.zeros(B, H, DK, DK + 1))
    with pytest.raises(ValueError, match="beta"):
        delta_scan(q, q, q, torch.rand(B, H, 4))
