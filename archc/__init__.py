"""archc: a declarative architecture compiler for sequence models.

Public API::

    import archc
    spec = archc.load_spec("specs/gpt.yaml", overrides=["d_model=256"])
    model = archc.compile("specs/gpt.yaml")      # torch.nn.Module
    graph = archc.to_graph(spec)                 # the verified IR

torch is imported only when a module is compiled, so spec checking stays fast.
"""

from __future__ import annotations

from typing import Any

from archc.api import compile, load, to_graph
from archc.diagnostics import Diagnostic, DiagnosticError, SourceLoc
from archc.frontend.components import ComponentDef, register_component
from archc.frontend.resolve import load_spec
from archc.frontend.schema import Spec

__all__ = [
    "CompiledModel",
    "ComponentDef",
    "Diagnostic",
    "DiagnosticError",
    "SourceLoc",
    "Spec",
    "compile",
    "load",
    "load_spec",
    "register_component",
    "to_graph",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "CompiledModel":  # lazily: importing it imports torch
        from archc.backends.torch.compiled import CompiledModel

        return CompiledModel
    raise AttributeError(f"module 'archc' has no attribute {name!r}")
