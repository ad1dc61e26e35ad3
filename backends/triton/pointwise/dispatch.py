"""What the torch lowering of `fused_pointwise` calls on CUDA tensors.

``fused_pointwise(program, inputs)`` runs the generated Triton kernels when
``op.can_lower`` says they apply, and otherwise the torch reference (naive.py), logging
the reason once (never silent). Triton is imported only here, on the first call, so a
machine without it still runs the torch path.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from archc.backends.triton.fallback import log_fallback
from archc.backends.triton.pointwise.naive import evaluate
from archc.ir.ops_fused import Program

__all__ = ["fused_pointwise"]

KERNEL = "pointwise"


def fused_pointwise(program: Program, inputs: Sequence[Tensor]) -> Tensor:
    """program(inputs): the generated kernel where it applies, else torch ops."""
    try:
        from archc.backends.triton.pointwise import op
    except ImportError as err:  # triton missing
        log_fallback(KERNEL, f"triton unavailable: {err}")
        return evaluate(program, inputs)
    ok, why = op.can_lower(
        inputs[0].device, [x.dtype for x in inputs], [tuple(x.shape) for x in inputs]
    )
    if not ok:
        log_fallback(KERNEL, why)
        return evaluate(program, inputs)
    return op.pointwise(program, inputs)
