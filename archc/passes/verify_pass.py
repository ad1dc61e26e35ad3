"""The `verify` pass: run the IR verifier (archc/ir/verify.py) at this point of a
pipeline. It never changes the graph; a broken graph raises VerifyError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from archc.ir.graph import Graph
from archc.ir.verify import verify
from archc.passes.base import PassResult
from archc.passes.pipeline import register_pass


@register_pass
@dataclass(frozen=True)
class Verify:
    """Check every IR invariant; the graph passes through untouched."""

    name: ClassVar[str] = "verify"

    def run(self, graph: Graph) -> PassResult:
        verify(graph)
        return PassResult(graph, False)
