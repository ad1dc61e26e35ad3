"""Generated pointwise Triton kernels (run by the Triton interpreter on CPU) against torch.

Random programs over every instruction, forward and the gradient of every input, in
float32 against the program evaluated with torch ops in float64 (naive.py; its ops are
checked against hand-written torch expressions below). Odd sizes (1, 63 and 257
elements, D=60) leave partial blocks; outputs and gradients pre-filled with NaN catch
unwritten elements.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from archc.backends.triton.fallback import logged_fallbacks  # noqa: E402
from archc.backends.triton.pointwise import gen, naive  # noqa: E402
from archc.backends.triton.pointwise.dispatch import fused_pointwise  # noqa: E402
from archc.backends.triton.pointwise.op import (  # noqa: E402
    can_lower,
    decode,
    encode,
    pointwise,
    pointwise_bwd,
    pointwise_fwd,
)
from archc.backends.triton.testing import rel_rms  # noqa: E402
from archc.ir.ops_fused import INSTR_UNARY, check_program  # noqa: E402

TOL = 2e-6
NAMES = [*INSTR_UNARY, "add", "mul", "sub", "scale"]


def random_program(seed: int, n_inputs: int, length: int) -> tuple:
    """A well-formed random program; every instruction name appears across the seeds."""
    rng = random.Random(seed)
    prog: list[tuple] = []
    for k in range(length):
        avail = n_inputs + k
        name = NAMES[(seed + k) % len(NAMES)] if k % 2 == 0 else rng.choice(NAMES)
        # Prefer recent values so programs are chains, sometimes reaching back.
        a = rng.choice([avail - 1, rng.randrange(avail)])
        if name in ("add", "mul", "sub"):
            prog.append((name, a, rng.randrange(avail)))
        elif name == "scale":
            prog.append((name, a, rng.choice([0.5, -1.5, 2.0])))
        else:
            prog.append((name, a))
    assert not check_program(tuple(prog), n_inputs)
    return tuple(prog)


SHAPES = [(1,), (63,), (257,), (2, 3, 60)]
CASES = [
    (seed, n, length, shape)
    for seed, (n, length), shape in zip(
        range(12),
        [(1, 1), (2, 2), (3, 6), (1, 8), (2, 5), (3, 3), (2, 9), (1, 4), (2, 7), (3, 8), (2, 4)]
        * 2,
        SHAPES * 3,
        strict=False,
    )
]


def _inputs(n: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    # Scaled so activations see both their linear and their saturated range.
    return [2.0 * torch.randn(shape, dtype=torch.float64) for _ in range(n)]


def _reference(program: tuple, xs: list[torch.Tensor], gy: torch.Tensor) -> tuple:
    xs = [x.clone().requires_grad_() for x in xs]
    y = naive.evaluate(program, xs)
    grads = torch.autograd.grad(y, xs, gy, allow_unused=True)
    return y.detach(), [
        torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads, strict=True)
    ]


@pytest.mark.parametrize(("seed", "n", "length", "shape"), CASES)
def test_generated_kernels_match_torch(seed: int, n: int, length: int, shape: tuple) -> None:
    program = random_program(seed, n, length)
    xs64 = _inputs(n, shape)
    gy64 = torch.randn(shape, dtype=torch.float64)
    ref_y, ref_g = _reference(program, xs64, gy64)

    xs = [x.float().requires_grad_() for x in xs64]
    y = pointwise(program, xs)
    grads = torch.autograd.grad(y, xs, gy64.float(), allow_unused=True)
    assert y.dtype == torch.float32 and y.shape == shape
    assert rel_rms(y, ref_y) < TOL, program
    for i, (g, r) in enumerate(zip(grads, ref_g, strict=True)):
        g = torch.zeros_like(xs[i]) if g is None else g
        assert rel_rms(g, r, floor=1e-12) < TOL, (program, i)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_element_written(shape: tuple) -> None:
    # Two inputs, one unused by the output (its gradient must be written as 0).
    program = (("silu", 0), ("tanh", 2), ("mul", 3, 0), ("gelu", 2))
    xs = [x.float() for x in _inputs(2, shape)]
    gy = torch.randn(shape)
    out = torch.full(shape, float("nan"))
    pointwise_fwd(program, xs, out)
    grads = [torch.full(shape, float("nan")) for _ in xs]
    pointwise_bwd(program, xs, gy, grads)
    assert not out.isnan().any() and not any(g.isnan().any() for g in grads)
    ref_y, ref_g = _reference(program, [x.double() for x in xs], gy.double())
    assert rel_rms(out, ref_y) < TOL
    assert rel_rms(grads[0], ref_g[0]) < TOL
    assert torch.equal(grads[1], torch.zeros(shape))


def test_unary_derivatives_at_extremes() -> None:
    # Saturated and tiny arguments: tanh's exp form and its series near 0, gelu tails.
    x = torch.tensor([-30.0, -8.0, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 0.2, 0.3, 8.0, 30.0])
    for name in INSTR_UNARY:
        program = ((name, 0),)
        xs = [x.clone().requires_grad_()]
        y = pointwise(program, xs)
        (g,) = torch.autograd.grad(y, xs, torch.ones_like(x))
        ref_y, ref_g = _reference(program, [x.double()], torch.ones_like(x, dtype=torch.float64))
        assert torch.allclose(y.double(), ref_y, rtol=1e-6, atol=1e-7), name
        assert torch.allclose(g.double(), ref_g[0], rtol=1e-6, atol=1e-7), name


def test_same_operand_twice_and_dead_values() -> None:
    # x * x: both operand slots feed one adjoint; the relu's result is never read.
    program = (("mul", 0, 0), ("relu", 0), ("add", 1, 0))
    x = torch.randn(63, requires_grad=True)
    y = pointwise(program, [x])
    (g,) = torch.autograd.grad(y, [x], torch.ones(63))
    torch.testing.assert_close(y, x.detach() * x.detach() + x.detach())
    torch.testing.assert_close(g, 2 * x.detach() + 1)


def test_naive_equals_hand_written_torch() -> None:
    # The reference itself against hand-written expressions, bit for bit in float64.
    a, b = torch.randn(2, 5, 60, dtype=torch.float64), torch.randn(2, 5, 60, dtype=torch.float64)
    cases = {
        (("silu", 0), ("mul", 2, 1)): F.silu(a) * b,
        (("gelu_tanh", 0), ("sub", 2, 1), ("scale", 3, 0.5)): (F.gelu(a, approximate="tanh") - b)
        * 0.5,
        (("sigmoid", 1), ("mul", 0, 2), ("add", 3, 0), ("tanh", 4)): torch.tanh(
            a * torch.sigmoid(b) + a
        ),
        (("relu", 0), ("gelu", 1), ("add", 2, 3)): F.relu(a) + F.gelu(b),
    }
    for program, expect in cases.items():
        assert torch.equal(naive.evaluate(program, [a, b]), expect), program


def test_program_round_trips_through_json() -> None:
    program = (("silu", 0), ("scale", 2, -1.5), ("mul", 3, 1))
    assert decode(encode(program)) == program


def test_backward_reads_only_what_derivatives_need() -> None:
    # add / sub / scale need no values; silu needs x0, mul needs both operands.
    assert gen.needed_values((("add", 0, 1), ("scale", 2, 3.0)), 2) == set()
    assert gen.needed_values((("silu", 0), ("mul", 2, 1)), 2) == {0, 1, 2}
    src = gen.backward_source((("add", 0, 1), ("sub", 2, 1)), 2)
    assert "x0_ptr + offs" not in src and "x1_ptr + offs" not in src


def test_bad_program_is_rejected() -> None:
    with pytest.raises(ValueError, match="operand"):
        gen.forward_source((("silu", 3),), 2)
    with pytest.raises(ValueError, match="unknown function"):
        pointwise((("exp", 0),), [torch.randn(3)])


def test_can_lower_reasons() -> None:
    assert can_lower("cuda", [torch.float32] * 2, [(2, 3), (2, 3)]) == (True, "ok")
    ok, why = can_lower("cpu", [torch.float32], [(3,)])
    assert not ok and "CUDA" in why
    ok, why = can_lower("cuda", [torch.float32, torch.float16], [(3,), (3,)])
    assert not ok and "dtype" in why
    ok, why = can_lower("cuda", [torch.float32] * 2, [(3,), (1,)])
    assert not ok and "broadcast" in why


def test_dispatch_falls_back_on_cpu_and_logs_once() -> None:
    program = (("silu", 0), ("mul", 2, 1))
    a, b = torch.randn(4, 60, dtype=torch.float64), torch.randn(4, 60, dtype=torch.float64)
    assert torch.equal(fused_pointwise(program, [a, b]), F.silu(a) * b)
    assert any(k == "pointwise" and "CUDA" in why for k, why in logged_fallbacks())


def test_dispatch_runs_the_kernel_where_it_can_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the lowering's CUDA branch calls, with can_lower forced to yes on the CPU
    # (the interpreter runs the kernel): float32 result and gradients of the kernel.
    from archc.backends.triton.pointwise import op

    calls: list[str] = []
    real = op.pointwise

    def spy(program: tuple, inputs: list[torch.Tensor]) -> torch.Tensor:
        calls.append(encode(program))
        return real(program, inputs)

    monkeypatch.setattr(op, "can_lower", lambda *a: (True, "ok"))
    monkeypatch.setattr(op, "pointwise", spy)
    program = (("sigmoid", 0), ("mul", 2, 1), ("sub", 3, 0))
    xs = [torch.randn(3, 7, 60, requires_grad=True) for _ in range(2)]
    y = fused_pointwise(program, xs)
    y.sum().backward()
    assert calls == [encode(program)]
    a, b = (x.detach().double().requires_grad_() for x in xs)
    ref = torch.sigmoid(a) * b - a
    ref.sum().backward()
    assert rel_rms(y, ref) < TOL
    assert rel_rms(xs[0].grad, a.grad) < TOL and rel_rms(xs[1].grad, b.grad) < TOL


def test_hook_of_the_generated_functions_reaches_the_dispatch() -> None:
    # The lowering's CUDA branch calls L.PointwiseHook.run; archc sets it (a standalone
    # model.py keeps None). On CPU tensors it is the torch fallback, exact in float64.
    from archc.backends.torch.modules import layers as L

    assert L.PointwiseHook.run is not None
    a, b = torch.randn(2, 60, dtype=torch.float64), torch.randn(2, 60, dtype=torch.float64)
    got = L.PointwiseHook.run((("tanh", 0), ("sub", 2, 1)), (a, b))
    assert torch.equal(got, torch.tanh(a) - b)
