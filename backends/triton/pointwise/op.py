"""Differentiable op and lowering check of the generated pointwise kernels.

``pointwise(program, inputs)`` runs a fused program's generated forward kernel, and its
generated backward kernel under autograd. Underneath are the torch.library custom ops
``torch.ops.archc.pointwise`` / ``pointwise_bwd`` (the program travels as a JSON
string, decoded without eval), so torch.compile traces around them. Only the inputs
whose values the backward reads are saved (gen.needed_values); every intermediate is
recomputed in float32 inside the backward kernel.

Launch helpers ``pointwise_fwd`` / ``pointwise_bwd`` write into caller-provided buffers
so tests can pre-fill them with NaN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache

import torch
import triton
from torch import Tensor

from archc.backends.triton.pointwise.gen import load, needed_values
from archc.ir.ops_fused import MAX_INPUTS, Program, check_program

__all__ = ["can_lower", "decode", "encode", "pointwise", "pointwise_bwd", "pointwise_fwd"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK_GPU = 1024
_BLOCK_INTERPRETED = 64  # the interpreter's cost grows with the block: keep it small


def encode(program: Program) -> str:
    """The program as a JSON string (the custom ops' argument)."""
    return json.dumps(program, separators=(",", ":"))


def _tuples(x: object) -> object:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


@cache
def decode(text: str) -> Program:
    """The program a JSON string encodes (lists back to tuples)."""
    program = _tuples(json.loads(text))
    assert isinstance(program, tuple)
    return program


def can_lower(
    device: torch.device | str, dtypes: Sequence[torch.dtype], shapes: Sequence[tuple[int, ...]]
) -> tuple[bool, str]:
    """Whether the generated kernels handle inputs on ``device`` of these dtypes and
    shapes. Returns (ok, reason); ``reason`` says why not (the caller logs it)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"device is {device.type}, the kernel needs CUDA"
    if not dtypes or len(dtypes) > MAX_INPUTS:
        return False, f"{len(dtypes)} inputs (1..{MAX_INPUTS} supported)"
    if any(d != dtypes[0] for d in dtypes) or dtypes[0] not in _DTYPES:
        return False, f"dtypes {sorted({str(d) for d in dtypes})}: one float dtype needed"
    if any(tuple(s) != tuple(shapes[0]) for s in shapes):
        return False, "inputs of different shapes (the kernel does not broadcast)"
    return True, "ok"


def _block(x: Tensor) -> int:
    # Under TRITON_INTERPRET=1 tensors live on the CPU.
    return _BLOCK_INTERPRETED if x.device.type == "cpu" else _BLOCK_GPU


def pointwise_fwd(program: Program, inputs: Sequence[Tensor], out: Tensor) -> Tensor:
    """Launch the forward kernel: `out` = program(inputs); all contiguous, one shape."""
    n = out.numel()
    if n == 0:
        return out
    block = _block(out)
    load(program, len(inputs)).fwd_kernel[(triton.cdiv(n, block),)](*inputs, out, n, BLOCK=block)
    return out


def pointwise_bwd(
    program: Program, inputs: Sequence[Tensor], gy: Tensor, grads: Sequence[Tensor]
) -> None:
    """Launch the backward kernel, writing d(out)/d(input i) . gy into grads[i].

    Inputs backward does not read (not in needed_values) may be any tensor of the shape."""
    n = gy.numel()
    if n == 0:
        return
    block = _block(gy)
    load(program, len(inputs)).bwd_kernel[(triton.cdiv(n, block),)](
        *inputs, gy, *grads, n, BLOCK=block
    )


@torch.library.custom_op("archc::pointwise", mutates_args=())
def _pointwise_op(program: str, inputs: list[Tensor]) -> Tensor:
    """program(inputs) on contiguous inputs of one shape and dtype."""
    return pointwise_fwd(decode(program), inputs, torch.empty_like(inputs[0]))


@_pointwise_op.register_fake
def _(program: str, inputs: list[Tensor]) -> Tensor:
    return torch.empty_like(inputs[0])


@torch.library.custom_op("archc::pointwise_bwd", mutates_args=())
def _pointwise_bwd_op(program: str, inputs: list[Tensor], gy: Tensor) -> list[Tensor]:
    """The gradient of every input (each like gy)."""
    grads = [torch.empty_like(gy) for _ in inputs]
    pointwise_bwd(decode(program), inputs, gy, grads)
    return grads


@_pointwise_bwd_op.register_fake
def _(program: str, inputs: list[Tensor], gy: Tensor) -> list[Tensor]:
    return [torch.empty_like(gy) for _ in inputs]


def _setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    program, xs = inputs
    n = len(xs)
    need = needed_values(decode(program), n)
    ctx.program, ctx.n = program, n
    ctx.need = [i for i in range(n) if i in need]
    ctx.save_for_backward(*(xs[i] for i in ctx.need))


def _backward(ctx, gy):  # type: ignore[no-untyped-def]
    gy = gy.contiguous()
    xs = [gy] * ctx.n  # inputs backward never reads: any tensor of the shape
    for i, x in zip(ctx.need, ctx.saved_tensors, strict=True):
        xs[i] = x
    return None, torch.ops.archc.pointwise_bwd(ctx.program, xs, gy)


_pointwise_op.register_autograd(_backward, setup_context=_setup)


def pointwise(program: Program, inputs: Sequence[Tensor]) -> Tensor:
    """program(inputs) with the generated Triton kernels (differentiable).

    inputs: N tensors of one shape (any, e.g. (B, T, D)) and one float dtype; the
    output has that shape and dtype, computed in float32.
    """
    problems = check_program(program, len(inputs))
    if problems:
        raise ValueError("bad pointwise program: " + "; ".join(problems))
    shape = inputs[0].shape
    if any(x.shape != shape for x in inputs):
        raise ValueError(f"pointwise inputs differ in shape: {[tuple(x.shape) for x in inputs]}")
    return torch.ops.archc.pointwise(encode(program), [x.contiguous() for x in inputs])
