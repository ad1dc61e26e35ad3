"""archc: a declarative architecture compiler for sequence models.

Public API::

    import archc
    spec = archc.load_spec("specs/gpt.yaml", overrides=["d_model=256"])
    model = archc.compile("specs/gpt.yaml")      # torch.nn.Module
    graph = archc.to_graph(spec)                 # the verified IR

torch is imported only when a module is compiled, so spec checking stays fast.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def _map_checkout_subpackages() -> None:
    """Serve `backends/` and `grammar/` as archc.backends / archc.grammar in a checkout.

    An installed archc has them inside the package (pyproject's package-dir maps them
    there). Run from a source checkout, they sit beside `archc/`, so map them here.
    """
    here = Path(__file__).resolve().parent
    for name in ("backends", "grammar"):
        full = f"{__name__}.{name}"
        init = here.parent / name / "__init__.py"
        if full in sys.modules or (here / name).is_dir() or not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location(
            full, init, submodule_search_locations=[str(init.parent)]
        )
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        globals()[name] = module


_map_checkout_subpackages()

from archc.api import compile, load, to_graph  # noqa: E402
from archc.diagnostics import Diagnostic, DiagnosticError, SourceLoc  # noqa: E402
from archc.extend import register_cell  # noqa: E402
from archc.frontend.components import ComponentDef, register_component  # noqa: E402
from archc.frontend.resolve import load_spec  # noqa: E402
from archc.frontend.schema import Spec  # noqa: E402

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
    "register_cell",
    "register_component",
    "to_graph",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "CompiledModel":  # lazily: importing it imports torch
        from archc.backends.torch.compiled import CompiledModel

        return CompiledModel
    if name == "train":  # archc.train(spec, run_dir): the loop behind `archc train`
        from archc.runtime.train import train

        return train
    raise AttributeError(f"module 'archc' has no attribute {name!r}")
