"""The `fused_pointwise` op: a chain of elementwise ops evaluated as one node.

`fuse-pointwise` (archc/passes/fuse_pointwise.py) builds it. N tensor inputs of one
type (no broadcasting) map to one output of that type. The attribute `program` is a
tuple of instructions over numbered values: 0..N-1 are the inputs, N + k is the
result of instruction k, and the output is the last instruction's result:

    (("silu", 0), ("mul", 2, 1))        # silu(x0) * x1 (SwiGLU's gate)
    (("add", 0, 1), ("scale", 2, 0.5))  # 0.5 * (x0 + x1)

Instructions: the unary activations of `pointwise` (INSTR_UNARY), the binary ops
add / mul / sub, and ("scale", a, factor). `kernel` is set by assign-kernels (the
lowering may ignore it). Backends evaluate programs with the same vocabulary: the
torch rule (backends/torch/lower_fused.py), the reference evaluator and the generated
Triton kernels (backends/triton/pointwise/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import F32, NONE, STR, AttrSpec, Cost, OpDef, ShapeError, tensor_of
from archc.ir.types import Attrs, Type

# name -> forward FLOPs per element (the same figures as the unfused ops' cost rules).
INSTR_UNARY = {
    "gelu": 8.0,
    "gelu_tanh": 8.0,
    "relu": 8.0,
    "silu": 8.0,
    "tanh": 8.0,
    "sigmoid": 8.0,
    "identity": 8.0,
}
INSTR_BINARY = {"add": 1.0, "mul": 1.0, "sub": 1.0}
# Instructions whose derivative reads their operands (backward needs those values).
NONLINEAR = frozenset(set(INSTR_UNARY) - {"identity"} | {"mul"})
MAX_INPUTS = 64

Instr = tuple  # ("silu", a) | ("mul", a, b) | ("scale", a, factor)
Program = tuple[Instr, ...]


def _is_index(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_program(program: object, n_inputs: int) -> list[str]:
    """Problems with `program` over `n_inputs` inputs (empty if well formed)."""
    if not isinstance(program, tuple) or not program:
        return [f"program must be a non-empty tuple of instructions, got {program!r}"]
    problems = []
    for k, ins in enumerate(program):
        avail = n_inputs + k  # values defined before instruction k
        if not isinstance(ins, tuple) or not ins or not isinstance(ins[0], str):
            problems.append(f"instruction {k} {ins!r} is not (name, operand, ...)")
            continue
        name, args = ins[0], ins[1:]
        if name in INSTR_UNARY:
            used, want = args, 1
        elif name in INSTR_BINARY:
            used, want = args, 2
        elif name == "scale":
            if len(args) != 2 or not isinstance(args[1], (int, float)) or isinstance(args[1], bool):
                problems.append(f"instruction {k} {ins!r}: scale takes (operand, factor)")
                continue
            if not math.isfinite(float(args[1])):
                problems.append(f"instruction {k} {ins!r}: factor must be finite")
            used, want = args[:1], 1
        else:
            problems.append(f"instruction {k}: unknown function {name!r}")
            continue
        if len(used) != want:
            problems.append(f"instruction {k} {ins!r}: {name} takes {want} operand(s)")
            continue
        for v in used:
            if not _is_index(v) or not 0 <= v < avail:
                problems.append(f"instruction {k} {ins!r}: operand {v!r} is not in 0..{avail - 1}")
    return problems


def operands(ins: Instr) -> tuple[int, ...]:
    """The value numbers an instruction reads (scale's factor is not one)."""
    return ins[1:2] if ins[0] == "scale" else ins[1:]


def needed_values(program: Program, n_inputs: int) -> set[int]:
    """Values a backward pass must recompute: the operands of nonlinear instructions
    (activations, mul: their derivatives read them) and what those are computed from.

    Backward recomputes intermediates from the inputs (nothing else is saved), so the
    inputs among these are all it keeps; an add-only chain keeps nothing.
    """
    need: set[int] = set()
    for ins in program:
        if ins[0] in NONLINEAR:
            need.update(operands(ins))
    for k in reversed(range(len(program))):  # operands come before their users
        if n_inputs + k in need:
            need.update(operands(program[k]))
    return need


def needed_inputs(program: Program, n_inputs: int) -> frozenset[int]:
    """The inputs backward must keep (see `needed_values`)."""
    return frozenset(v for v in needed_values(program, n_inputs) if v < n_inputs)


def describe(program: Program, n_inputs: int) -> str:
    """The program as one expression, e.g. 'silu(x0) * x1' (docstrings, reports)."""
    vals = [f"x{i}" for i in range(n_inputs)]
    sym = {"add": "+", "mul": "*", "sub": "-"}
    for ins in program:
        name = ins[0]
        if name in INSTR_BINARY:
            vals.append(f"({vals[ins[1]]} {sym[name]} {vals[ins[2]]})")
        elif name == "scale":
            vals.append(f"{ins[2]!r} * {vals[ins[1]]}")
        else:
            arg = vals[ins[1]]
            wrapped = program[ins[1] - n_inputs][0] in INSTR_BINARY if ins[1] >= n_inputs else False
            vals.append(f"{name}{arg}" if wrapped else f"{name}({arg})")
    out = vals[-1]
    return out[1:-1] if out.startswith("(") and out.endswith(")") else out


def _fused_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    first = tensor_of(ins[0], "fused_pointwise")
    for t in ins[1:]:
        if tensor_of(t, "fused_pointwise") != first:
            raise ShapeError(f"fused_pointwise inputs differ: {first} and {t} (no broadcasting)")
    if first.dtype != "f32":
        raise ShapeError(f"fused_pointwise expects float tensors, got {first}")
    problems = check_program(attrs["program"], len(ins))
    if problems:
        raise ShapeError("; ".join(problems))
    return (first,)


def _fused_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    n = tensor_of(ins[0], "fused_pointwise").feature
    flops = 0.0
    for instr in attrs["program"]:
        flops += INSTR_UNARY.get(instr[0], INSTR_BINARY.get(instr[0], 1.0)) * n
    # Backward recomputes intermediates in registers: only the inputs it reads are kept.
    saved = len(needed_inputs(attrs["program"], len(ins)))
    return Cost(ew_flops=flops, act_bytes=float(saved * n * F32))


FUSED_POINTWISE_OP = OpDef(
    "fused_pointwise",
    (1, MAX_INPUTS),
    {"program": AttrSpec((tuple,)), "kernel": AttrSpec(STR + NONE, None)},
    _fused_shape,
    cost=_fused_cost,
    elementwise=True,
    doc="a fused chain of elementwise ops over N equal-shape inputs (one output)",
)
