"""Generated pointwise kernels on CUDA (skipped without CUDA): random programs against
torch in float64, half precision, large grids, and kernel launches per forward of a
model at -O0 vs -O2 (fuse-pointwise turns each fused group's launches into one)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from archc.backends.triton.testing import rel_rms

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEV = "cuda"
SPECS = Path(__file__).resolve().parents[2] / "specs"
NAMES = ["gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid", "identity", "add", "mul"]
NAMES += ["sub", "scale"]


def _program(seed: int, n: int, length: int) -> tuple:
    rng = random.Random(seed)
    prog: list[tuple] = []
    for k in range(length):
        avail, name = n + k, NAMES[(seed + k) % len(NAMES)]
        a = rng.choice([avail - 1, rng.randrange(avail)])
        if name in ("add", "mul", "sub"):
            prog.append((name, a, rng.randrange(avail)))
        elif name == "scale":
            prog.append((name, a, rng.choice([0.5, -1.5])))
        else:
            prog.append((name, a))
    return tuple(prog)


def _reference(program: tuple, xs: list[torch.Tensor], gy: torch.Tensor):
    from archc.backends.triton.pointwise.naive import evaluate

    xs = [x.detach().double().requires_grad_() for x in xs]
    y = evaluate(program, xs)
    gs = torch.autograd.grad(y, xs, gy.double(), allow_unused=True)
    return y.detach(), [
        torch.zeros_like(x) if g is None else g for x, g in zip(xs, gs, strict=True)
    ]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", [(1,), (257,), (4, 1000, 60), (3, 5, 4, 33)])
def test_random_programs_fp32(seed: int, shape: tuple) -> None:
    from archc.backends.triton.pointwise.op import pointwise

    n = 1 + seed % 3
    program = _program(seed, n, 3 + seed)
    xs = [(2 * torch.randn(shape, device=DEV)).requires_grad_() for _ in range(n)]
    gy = torch.randn(shape, device=DEV)
    y = pointwise(program, xs)
    gs = torch.autograd.grad(y, xs, gy, allow_unused=True)
    ry, rg = _reference(program, xs, gy)
    assert rel_rms(y, ry) < 1e-5, program
    for x, g, r in zip(xs, gs, rg, strict=True):
        assert rel_rms(torch.zeros_like(x) if g is None else g, r, floor=1e-12) < 1e-5, program


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype: torch.dtype) -> None:
    from archc.backends.triton.pointwise.op import pointwise

    program = (("silu", 0), ("mul", 2, 1), ("add", 3, 0), ("gelu_tanh", 4))
    xs = [torch.randn(8, 128, 96, device=DEV, dtype=dtype).requires_grad_() for _ in range(2)]
    gy = torch.randn(8, 128, 96, device=DEV, dtype=dtype)
    y = pointwise(program, xs)
    gs = torch.autograd.grad(y, xs, gy)
    ry, rg = _reference(program, xs, gy)
    assert y.dtype == dtype
    assert rel_rms(y, ry) < 1e-2
    for g, r in zip(gs, rg, strict=True):
        assert g.dtype == dtype and rel_rms(g, r) < 1e-2


def test_nan_prefill_large() -> None:
    from archc.backends.triton.pointwise.op import pointwise_bwd, pointwise_fwd

    program = (("tanh", 0), ("mul", 2, 1))
    n = 3 * 1024 + 17
    xs = [torch.randn(n, device=DEV) for _ in range(2)]
    out = torch.full((n,), float("nan"), device=DEV)
    pointwise_fwd(program, xs, out)
    grads = [torch.full((n,), float("nan"), device=DEV) for _ in range(2)]
    pointwise_bwd(program, xs, torch.ones(n, device=DEV), grads)
    assert not out.isnan().any() and not any(g.isnan().any() for g in grads)
    torch.testing.assert_close(out, torch.tanh(xs[0]) * xs[1])


def _launches(model: torch.nn.Module, x: torch.Tensor) -> int:
    """CUDA kernels launched by one forward (memcpy / memset excluded)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x)  # warm up: Triton compiles on the first call
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
    kernels = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not e.name.startswith(("Memcpy", "Memset"))
    ]
    return len(kernels)


def test_launches_per_forward_o0_vs_o2() -> None:
    from archc.api import to_graph
    from archc.backends.torch.compiled import compile_graph
    from archc.backends.triton.fallback import logged_fallbacks
    from archc.passes.pipeline import pipeline_for_level, run_pipeline

    o2 = pipeline_for_level(2)
    assert "fuse-pointwise" in o2
    g0 = to_graph(SPECS / "llama.yaml")
    g2 = run_pipeline(g0, o2, context={"device": "cuda", "seq_len": 64}).graph
    fused = [n for n in g2.walk() if n.op == "fused_pointwise"]
    assert fused
    saved = sum(len(n.attrs["program"]) - 1 for n in fused)
    m0 = compile_graph(g0).to(DEV).eval()
    m2 = compile_graph(g2).to(DEV).eval()
    m2.load_state_dict(m0.state_dict())
    x = torch.randint(0, 200, (2, 64), device=DEV)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m0(x), rtol=1e-4, atol=1e-4)
    n0, n2 = _launches(m0, x), _launches(m2, x)
    print(f"kernel launches per forward: -O0 {n0}, -O2 {n2} ({len(fused)} fused nodes)")
    assert not any(k == "pointwise" for k, _ in logged_fallbacks())
    assert n2 <= n0 - saved
