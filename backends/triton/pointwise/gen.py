"""Generate the Triton source of a fused pointwise program (forward and backward kernel).

A program (archc/ir/ops_fused.py) numbers its values: 0..N-1 the inputs, N + k the
result of instruction k; the output is the last value. Both kernels treat every input
as a flat array of n elements; one program instance owns BLOCK of them:

    fwd_kernel(x0, .., x{N-1}, out, n, BLOCK)        out = program(x)
    bwd_kernel(x0, .., x{N-1}, gy, g0, .., g{N-1}, n, BLOCK)

The backward kernel loads only the inputs whose values a derivative reads (see
`needed_values`), recomputes the intermediates it needs in float32 in registers (they
are never saved), then walks the instructions in reverse, accumulating each value's
adjoint with the instruction's symbolic derivative. Everything is computed in float32
and stored in the pointers' dtype.

`load(program, n_inputs)` writes the source into a cache directory (@triton.jit needs a
real file to read the source back) and imports it, memoised per program.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

from archc.ir.ops_fused import INSTR_BINARY, Program, check_program, describe, needed_values

__all__ = ["backward_source", "forward_source", "load", "module_source", "needed_values"]

# Helpers shared by every generated module. tanh is built from exp: libdevice's tanh
# does not run under the Triton interpreter. Its small-|x| branch (odd Taylor series)
# avoids the cancellation of 1 - e near 0.
_PRELUDE = """\
import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    t = (1.0 - e) / (1.0 + e)
    x2 = x * x
    c = 0.3333333333333333 - x2 * (0.13333333333333333 - x2 * 0.05396825396825397)
    return tl.where(ax < 0.25, x * (1.0 - x2 * c), tl.where(x < 0, -t, t))


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def _gelu_tanh(x):
    return 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def _d_gelu(x):
    cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
    return cdf + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)


@triton.jit
def _d_gelu_tanh(x):
    t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    du = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


@triton.jit
def _d_silu(x):
    s = tl.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@triton.jit
def _d_sigmoid(x):
    s = tl.sigmoid(x)
    return s * (1.0 - s)


@triton.jit
def _d_tanh(x):
    t = _tanh(x)
    return 1.0 - t * t
"""

# Forward expression of each unary instruction on operand {a}.
_UNARY = {
    "gelu": "_gelu({a})",
    "gelu_tanh": "_gelu_tanh({a})",
    "relu": "tl.maximum({a}, 0.0)",
    "silu": "{a} * tl.sigmoid({a})",
    "tanh": "_tanh({a})",
    "sigmoid": "tl.sigmoid({a})",
    "identity": "{a}",
}
# Adjoint contribution of a unary instruction to its operand {a}, given the result's {g}.
# relu passes the gradient where x > 0 only (torch's threshold_backward: 0 at x = 0).
_D_UNARY = {
    "gelu": "{g} * _d_gelu({a})",
    "gelu_tanh": "{g} * _d_gelu_tanh({a})",
    "relu": "tl.where({a} > 0.0, {g}, 0.0)",
    "silu": "{g} * _d_silu({a})",
    "tanh": "{g} * _d_tanh({a})",
    "sigmoid": "{g} * _d_sigmoid({a})",
    "identity": "{g}",
}
_BINARY = {"add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}"}


def _expr(ins: tuple, v: list[str]) -> str:
    name = ins[0]
    if name in INSTR_BINARY:
        return _BINARY[name].format(a=v[ins[1]], b=v[ins[2]])
    if name == "scale":
        return f"{v[ins[1]]} * {float(ins[2])!r}"
    return _UNARY[name].format(a=v[ins[1]])


def _check(program: Program, n_inputs: int) -> None:
    problems = check_program(program, n_inputs)
    if problems:
        raise ValueError("bad pointwise program: " + "; ".join(problems))


def _head(name: str, params: list[str]) -> list[str]:
    return [
        "",
        "",
        "@triton.jit",
        f"def {name}({', '.join(params)}, n, BLOCK: tl.constexpr):",
        "    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)",
        "    mask = offs < n",
    ]


def _load(i: int) -> str:
    return f"    v{i} = tl.load(x{i}_ptr + offs, mask=mask, other=0.0).to(tl.float32)"


def forward_source(program: Program, n_inputs: int) -> str:
    """Source of `fwd_kernel` (without the prelude)."""
    _check(program, n_inputs)
    ptrs = [f"x{i}_ptr" for i in range(n_inputs)]
    lines = _head("fwd_kernel", [*ptrs, "out_ptr"])
    v = [f"v{i}" for i in range(n_inputs + len(program))]
    lines += [_load(i) for i in range(n_inputs)]
    for k, ins in enumerate(program):
        lines.append(f"    v{n_inputs + k} = {_expr(ins, v)}  # {ins[0]}")
    out = v[-1]
    lines.append(f"    tl.store(out_ptr + offs, {out}.to(out_ptr.dtype.element_ty), mask=mask)")
    return "\n".join(lines) + "\n"


def backward_source(program: Program, n_inputs: int) -> str:
    """Source of `bwd_kernel` (without the prelude): recompute, then reverse sweep."""
    _check(program, n_inputs)
    ptrs = [f"x{i}_ptr" for i in range(n_inputs)]
    grads = [f"g{i}_ptr" for i in range(n_inputs)]
    lines = _head("bwd_kernel", [*ptrs, "gy_ptr", *grads])
    need = needed_values(program, n_inputs)
    v = [f"v{i}" for i in range(n_inputs + len(program))]
    lines += [_load(i) for i in range(n_inputs) if i in need]
    for k, ins in enumerate(program):
        if n_inputs + k in need:
            lines.append(f"    v{n_inputs + k} = {_expr(ins, v)}  # {ins[0]} (recomputed)")
    last = n_inputs + len(program) - 1
    lines.append(f"    a{last} = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(tl.float32)")
    has = {last}

    def add(target: int, expr: str) -> None:
        if target in has:
            lines.append(f"    a{target} = a{target} + {expr}")
        else:
            lines.append(f"    a{target} = {expr}")
            has.add(target)

    for k in reversed(range(len(program))):
        r, ins = n_inputs + k, program[k]
        if r not in has:
            continue  # a result nothing reads: no gradient flows through it
        g, name = f"a{r}", ins[0]
        if name == "add":
            add(ins[1], g)
            add(ins[2], g)
        elif name == "sub":
            add(ins[1], g)
            add(ins[2], f"-{g}")
        elif name == "mul":
            add(ins[1], f"{g} * {v[ins[2]]}")
            add(ins[2], f"{g} * {v[ins[1]]}")
        elif name == "scale":
            add(ins[1], f"{g} * {float(ins[2])!r}")
        else:
            add(ins[1], _D_UNARY[name].format(g=g, a=v[ins[1]]))
    for i in range(n_inputs):
        val = f"a{i}" if i in has else "tl.zeros((BLOCK,), dtype=tl.float32)"
        lines.append(
            f"    tl.store(g{i}_ptr + offs, {val}.to(g{i}_ptr.dtype.element_ty), mask=mask)"
        )
    return "\n".join(lines) + "\n"


def module_source(program: Program, n_inputs: int) -> str:
    """The whole generated module: prelude, forward and backward kernel."""
    doc = f'"""Generated by archc (fuse-pointwise): y = {describe(program, n_inputs)}."""\n\n'
    prog = f"PROGRAM = {program!r}\nN_INPUTS = {n_inputs!r}\n"
    return (
        doc
        + _PRELUDE
        + "\n\n"
        + prog
        + forward_source(program, n_inputs)
        + backward_source(program, n_inputs)
    )


def _cache_dir() -> Path:
    """~/.cache/archc/pointwise, or a per-user temporary directory if home is read-only."""
    for base in (Path.home() / ".cache", Path(tempfile.gettempdir()) / f"archc-{os.getuid()}"):
        path = base / "archc" / "pointwise"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise OSError("no writable cache directory for generated pointwise kernels")


@cache
def load(program: Program, n_inputs: int) -> ModuleType:
    """The imported generated module of `program` (fwd_kernel, bwd_kernel), memoised.

    The file is named by the hash of its source, written atomically (another process
    may write the same file at the same time), and never rewritten once present.
    """
    text = module_source(program, n_inputs)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    path = _cache_dir() / f"pw_{digest}.py"
    if not path.exists() or path.read_text() != text:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"archc_pointwise_{digest}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import generated kernel {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
