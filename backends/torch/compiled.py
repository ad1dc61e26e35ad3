"""In-memory compilation: graph -> an instance of the generated Model class."""

from __future__ import annotations

import itertools
import linecache
import math
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.codegen import model_source
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Graph

_counter = itertools.count()


class CompiledModel(nn.Module):
    """Base class of every compiled model.

    `forward(x, state=None, return_state=False)`: x is token ids (B, T) or features
    (B, T, D); returns (B, T, out), plus a dict of final recurrent states keyed by
    layer path when `return_state` is set. `graph` is the IR it was generated from,
    `source` the generated Python.
    """

    graph: Graph
    source: str

    def num_parameters(self) -> int:
        """Distinct trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())


def compile_graph(graph: Graph, seed: int | None = 0) -> CompiledModel:
    """Generate, exec and instantiate the module for `graph`; parameters initialised."""
    src = model_source(graph, base="CompiledModel")
    filename = f"<archc-model-{next(_counter)}:{graph.name}>"
    # Register the text so tracebacks and inspect show the generated lines.
    linecache.cache[filename] = (len(src.text), None, src.text.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "torch": torch,
        "nn": nn,
        "F": F,
        "math": math,
        "SimpleNamespace": SimpleNamespace,
        "L": L,
        "CompiledModel": CompiledModel,
        "__name__": "archc_generated",
    }
    exec(compile(src.text, filename, "exec"), namespace)
    model: CompiledModel = namespace["Model"]()
    model.reset_parameters(seed)
    model.graph = graph
    model.source = src.text
    return model
