"""Titans / ATLAS neural memory against hand-written float64 references.

The references follow the papers' equations token by token and take the gradient of the
memory loss with torch.autograd (not the module's hand-derived formulas):
S_t = eta_t S_{t-1} - theta_t grad l_t(W), W_t = (1 - alpha_t) W_{t-1} + S_t, y_t = M_t(q_t),
with l_t the squared error over the last `window` tokens. In the chunked rule the
gradient is taken at the weights of the chunk start.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archc.backends.torch.modules.memory import NeuralMemory, TitansMAC, memory_scan


def _mlp(ws: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for i, w in enumerate(ws):
        x = x @ w
        if i < len(ws) - 1:
            x = x * torch.sigmoid(x)
    return x


def reference(ws0, q, k, v, theta, eta, alpha, chunk, window):
    """Per sample and head: weights ws0 [(B, H, a, b)], q/k/v (B, H, T, d), gates (B, H, T).
    chunk=1: the per-token rule; chunk=C: gradients at the chunk-start weights."""
    bsz, heads, t_len, _ = q.shape
    out = torch.zeros(bsz, heads, t_len, v.shape[-1], dtype=q.dtype)
    finals = []
    for b in range(bsz):
        for h in range(heads):
            w = [x[b, h].clone() for x in ws0]
            s = [torch.zeros_like(x) for x in w]
            w_start = [x.clone() for x in w]
            for t in range(t_len):
                if t % chunk == 0:
                    w_start = [x.clone() for x in w]
                at = [x.clone().requires_grad_(True) for x in w_start]
                lo = max(0, t - window + 1)
                loss = ((_mlp(at, k[b, h, lo : t + 1]) - v[b, h, lo : t + 1]) ** 2).sum()
                grads = torch.autograd.grad(loss, at)
                s = [eta[b, h, t] * si - theta[b, h, t] * g for si, g in zip(s, grads, strict=True)]
                w = [(1 - alpha[b, h, t]) * wi + si for wi, si in zip(w, s, strict=True)]
                out[b, h, t] = _mlp(w, q[b, h, t])
            finals.append(w)
    return out, finals


def _inputs(depth: int, t_len: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    bsz, heads, dk, dh = 2, 2, 3, 5
    shapes = [(dk, dk)] if depth == 1 else [(dk, dh), (dh, dk)]
    ws0 = [torch.randn(bsz, heads, *s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]
    q = F.normalize(torch.randn(bsz, heads, t_len, dk, generator=g, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(bsz, heads, t_len, dk, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(bsz, heads, t_len, dk, generator=g, dtype=torch.float64)
    gates = torch.randn(3, bsz, heads, t_len, generator=g, dtype=torch.float64)
    theta, eta, alpha = (
        0.5 * torch.sigmoid(gates[0]),
        torch.sigmoid(gates[1]),
        torch.sigmoid(gates[2] - 2),
    )
    return ws0, q, k, v, theta, eta, alpha


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize(("chunk", "window"), [(1, 1), (4, 1), (3, 3), (1, 2), (16, 2)])
def test_write_and_read_match_the_reference(depth: int, chunk: int, window: int) -> None:
    ws0, q, k, v, theta, eta, alpha = _inputs(depth)
    y, ws, _ = memory_scan(ws0, q, k, v, theta, torch.log(eta), torch.log1p(-alpha), chunk, window)
    ref, finals = reference(ws0, q, k, v, theta, eta, alpha, chunk, window)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    for li in range(depth):
        final = torch.stack([f[li] for f in finals]).view_as(ws[li])
        torch.testing.assert_close(ws[li], final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("depth", [1, 2])
def test_chunk_one_is_the_per_token_loop(depth: int) -> None:
    """Chunk size 1 of the chunked form equals the per-token rule exactly."""
    ws0, q, k, v, theta, eta, alpha = _inputs(depth, seed=1)
    y1, _, _ = memory_scan(ws0, q, k, v, theta, torch.log(eta), torch.log1p(-alpha), 1, 1)
    ref, _ = reference(ws0, q, k, v, theta, eta, alpha, 1, 1)
    torch.testing.assert_close(y1, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2])
def test_retrieval_improves_after_writing(depth: int) -> None:
    """Write one (k, v) pair (8 samples x 2 heads); M(k) is closer to v afterwards."""
    ws0, _, k, v, _, _, _ = _inputs(depth, t_len=1, seed=2)
    ws0, k, v = [w.repeat(4, 1, 1, 1) for w in ws0], k.repeat(4, 1, 1, 1), v.repeat(4, 1, 1, 1)
    v = v + torch.randn_like(v)
    ones = torch.ones(k.shape[:3], dtype=k.dtype)
    before = ((_mlp(ws0, k) - v) ** 2).sum(-1)
    _, ws, _ = memory_scan(ws0, k, k, v, 0.1 * ones, torch.log(0.5 * ones), 0 * ones, 1, 1)
    after = ((_mlp(ws, k) - v) ** 2).sum(-1)
    assert (after < before).all(), (before, after)


def test_gradients_flow_to_every_parameter() -> None:
    """The outer loop trains the memory's initial weights, projections and gates."""
    torch.manual_seed(0)
    m = NeuralMemory(8, 2, depth=2, chunk=4, window=2).double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    m(torch.randn(2, 9, 8, dtype=torch.float64)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _perturb_check(module: torch.nn.Module, t_len: int = 13, at: int = 6) -> None:
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, t_len, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, at] += 1.0
    y, y2 = module(x), module(x2)
    torch.testing.assert_close(y[:, :at], y2[:, :at], rtol=0, atol=1e-12)
    assert (y[:, at:] - y2[:, at:]).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["chunked", "sequential"])
def test_memory_is_causal(mode: str) -> None:
    _perturb_check(NeuralMemory(8, 2, depth=2, chunk=4, window=3, lr=0.3, mode=mode).double())


def test_mac_is_causal() -> None:
    _perturb_check(TitansMAC(8, 2, depth=2, chunk=4, persist=2, lr=0.3).double(), at=5)


@pytest.mark.parametrize("scale", [0.05, 20.0])
def test_gate_extremes_stay_finite_and_exact(scale: float) -> None:
    """Momentum and decay gates pushed towards 0 and 1 (cumulative products far below
    float range in a chunk): the log-space chunked form still matches the reference."""
    ws0, q, k, v, theta, _, _ = _inputs(2, t_len=12, seed=3)
    g = torch.Generator().manual_seed(4)
    pre = scale * torch.randn(2, *theta.shape, generator=g, dtype=torch.float64)
    log_eta, log_keep = F.logsigmoid(pre[0]), F.logsigmoid(pre[1])
    y, _, _ = memory_scan(ws0, q, k, v, theta, log_eta, log_keep, 6, 2)
    ref, _ = reference(ws0, q, k, v, theta, log_eta.exp(), -torch.expm1(log_keep), 6, 2)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)
