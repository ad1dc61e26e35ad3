"""Where archc plugs its generated pointwise kernels into fused_pointwise functions.

Each `fused_pointwise` node lowers to a module-level function of torch lines
(backends/torch/lower_fused.py); on CUDA tensors it first asks `PointwiseHook.run`.
The standalone emitter copies `PointwiseHook` verbatim into model.py, which must
import torch alone (tests/cli/test_emit.py), so the class names nothing of archc:
archc sets `run` at the bottom of this file (not copied), and in a standalone model.py
it stays None, where the torch lines run, exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PointwiseHook:
    """``run(program, inputs)`` -> program(inputs) with archc's generated Triton kernel
    (or torch ops where it does not apply, logged once). None in a standalone model.py."""

    run = None


def _run(program: tuple, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """archc's side of `PointwiseHook` (dispatch.py imports triton lazily)."""
    from archc.backends.triton.pointwise.dispatch import fused_pointwise

    return fused_pointwise(program, inputs)


# Set here, at import, by archc (this line is not copied into a standalone model.py).
PointwiseHook.run = staticmethod(_run)
