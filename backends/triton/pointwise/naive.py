"""Reference evaluator of a fused pointwise program with torch ops (differentiable).

The same functions the unfused ops lower to (backends/torch/lower.py), in the same
order, so in float64 its result equals the unfused graph's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.ir.ops_fused import Program

__all__ = ["UNARY", "evaluate"]

UNARY = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def evaluate(program: Program, inputs: Sequence[Tensor]) -> Tensor:
    """The program's output for `inputs` (N tensors of one shape); autograd flows."""
    vals = list(inputs)
    for ins in program:
        name = ins[0]
        if name == "add":
            vals.append(vals[ins[1]] + vals[ins[2]])
        elif name == "sub":
            vals.append(vals[ins[1]] - vals[ins[2]])
        elif name == "mul":
            vals.append(vals[ins[1]] * vals[ins[2]])
        elif name == "scale":
            vals.append(vals[ins[1]] * float(ins[2]))
        else:
            vals.append(UNARY[name](vals[ins[1]]))
    return vals[-1]
