"""Torch lowering rule of the `fused_pointwise` op (archc/ir/ops_fused.py); lower.py
merges FUSED_RULES into its rule table.

Each distinct program becomes one module-level function of straight-line torch code,
the same expressions the unfused ops lower to (so float64 results match them
bit for bit), e.g. for SwiGLU's gate:

    def fused_pointwise_3b1f0c2a(x0, x1):
        '''silu(x0) * x1: elementwise ops fused by archc (fuse-pointwise).'''
        if x0.is_cuda and L.PointwiseHook.run is not None:
            return L.PointwiseHook.run((("silu", 0), ("mul", 2, 1)), (x0, x1))
        v2 = F.silu(x0)
        v3 = v2 * x1
        return v3

The CUDA branch runs the program's generated Triton kernels (or, where they do not
apply, logs why and runs torch ops) through `PointwiseHook` (modules/pointwise_hook.py,
the pattern of fused.py's KernelHook): archc sets its `run`; in a standalone model.py,
which must import torch alone, it stays None and the torch lines run.
"""

from __future__ import annotations

import hashlib

# The unfused ops' expressions: the fused function computes exactly what they do.
from archc.backends.torch.lower import _BINARY, _POINTWISE, Rule, _no_module
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.ops_fused import INSTR_BINARY, Program, describe
from archc.ir.types import Type


def function_name(program: Program, n_inputs: int) -> str:
    """The generated function's name: equal programs share one definition."""
    digest = hashlib.sha256(repr((program, n_inputs)).encode()).hexdigest()[:8]
    return f"fused_pointwise_{digest}"


def function_source(program: Program, n_inputs: int) -> str:
    """The module-level definition evaluating `program` (see the module docstring)."""
    args = [f"x{i}" for i in range(n_inputs)]
    v = list(args)
    body = []
    for k, ins in enumerate(program):
        name, out = ins[0], f"v{n_inputs + k}"
        if name in INSTR_BINARY:
            expr = _BINARY[name].format(a=v[ins[1]], b=v[ins[2]])
        elif name == "scale":
            expr = f"{v[ins[1]]} * {float(ins[2])!r}"
        else:
            expr = _POINTWISE[name].format(x=v[ins[1]])
        body.append(f"    {out} = {expr}")
        v.append(out)
    arglist = ", ".join(args)
    tup = f"({arglist},)" if n_inputs == 1 else f"({arglist})"
    desc = describe(program, n_inputs)
    desc = desc if len(desc) <= 72 else desc[:69] + "..."
    return (
        f"def {function_name(program, n_inputs)}({arglist}):\n"
        f'    """{desc}: elementwise ops fused by archc '
        '(fuse-pointwise)."""\n'
        "    if x0.is_cuda and L.PointwiseHook.run is not None:\n"
        f"        return L.PointwiseHook.run({program!r}, {tup})\n"
        + "\n".join(body)
        + f"\n    return {v[-1]}\n"
    )


def _defs(node: Node, ins: list[Type]) -> str:
    return function_source(node.attrs["program"], len(node.inputs))


def _call(node: Node, args: list[str], mod: str) -> str:
    return f"{function_name(node.attrs['program'], len(node.inputs))}({', '.join(args)})"


FUSED_RULES: dict[str, Rule] = {
    # Elementwise: output t reads inputs at t only, so chunked runs need no state.
    "fused_pointwise": Rule(_no_module, _call, (L.PointwiseHook,), per_token=True, defs=_defs),
}
