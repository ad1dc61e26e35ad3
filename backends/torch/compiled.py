"""In-memory compilation: graph -> an instance of the generated Model class."""

from __future__ import annotations

import itertools
import linecache
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.codegen import model_source
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Graph
from archc.ir.printer import structural_hash

_counter = itertools.count()


@dataclass(frozen=True)
class Supervision:
    """The batch's targets as the modules' supervised losses see them.

    `loss(pred)`: the model's prediction (B, T, out) -> per-position losses (B, T),
    scaled like the main loss (their sum is what that prediction would add to it; 0 at
    unsupervised positions). `correct(pred)`: (B, T) bool, True where the prediction
    is right or the position is unsupervised.
    """

    loss: Callable[[torch.Tensor], torch.Tensor]
    correct: Callable[[torch.Tensor], torch.Tensor]


class CompiledModel(nn.Module):
    """Base class of every compiled model.

    `forward(x, state=None, return_state=False, lengths=None)`: x is token ids (B, T) or
    features (B, T, D); returns (B, T, out), plus the state after x when `return_state`
    is set. Passing that state back continues the sequence (causal models only; see
    `incremental_support`): chunked calls give the same outputs as one full call.
    `lengths` (B,) marks a right-padded batch: every scan stops at each length.

    The state is a dict: '_pos' (int, tokens seen so far) and one entry per stateful
    node, keyed by its path (with '#<step>' per loop step): attention KV caches
    `(k, v)`, each (B, KV, C, hd); causal conv1d inputs (B, reach, D); scan carries
    `h` or `(h, c)`, each (layers * dirs, B, hidden). A dict without '_pos' starts a new
    sequence with initial scan carries. `graph` is the IR it was generated from,
    `source` the generated Python, `spec_hash` the structural hash of the spec's graph
    before passes that only choose how to run it (scan modes).
    """

    graph: Graph
    source: str
    spec_hash: str

    def num_parameters(self) -> int:
        """Distinct trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def aux_loss(self, supervision: Supervision | None = None) -> torch.Tensor | None:
        """The sum of the auxiliary losses the modules recorded during the last forward
        (already weighted: e.g. a chunking ratio loss, a halting loss), or None.

        A module records one by setting its attribute `aux_loss_value` to a scalar tensor
        in forward; reading takes them (each is counted once), so call it once per step.
        Losses that need the batch's targets (HRM-style halting: deep supervision, the
        Q-head's answer-correctness target) come from modules with `supervised_loss`,
        and only when `supervision` is given; `archc train` always gives it.
        """
        total = None
        for m in self.modules():
            value = getattr(m, "aux_loss_value", None)
            if value is not None:
                total = value if total is None else total + value
                m.aux_loss_value = None
            scorer = getattr(m, "supervised_loss", None)
            if scorer is not None:
                value = scorer(supervision)
                if value is not None:
                    total = value if total is None else total + value
        return total

    def begin_step(self, step: int) -> list[str]:
        """Tell the modules that training step `step` (0-based) is about to run; those
        with a `begin_step(step) -> bool` method act on it (depth up-scaling grows the
        stack at its step). Returns the paths of the modules that changed the model."""
        changed = []
        for path, m in self.named_modules():
            hook = getattr(m, "begin_step", None)
            if m is not self and hook is not None and hook(step):
                changed.append(path)
        return changed

    def stats(self) -> dict[str, float]:
        """Scalars the modules recorded during the last forward, keyed `<path>.<name>`
        (e.g. the steps an adaptive-depth loop used): a module sets its attribute
        `stats_values` to a dict of floats or 0-d tensors."""
        out: dict[str, float] = {}
        for path, m in self.named_modules():
            for key, value in (getattr(m, "stats_values", None) or {}).items():
                out[f"{path}.{key}" if path else key] = float(value)
        return out

    def incremental_support(self) -> tuple[bool, str]:
        """(True, "") if forward can continue a sequence from a state, else (False, why)."""
        raise NotImplementedError  # generated per model

    def constant_state(self) -> bool:
        """True if the state stays the same size as tokens are added (no growing KV cache):
        each further token then costs constant work."""
        raise NotImplementedError  # generated per model


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
    model.spec_hash = structural_hash(graph)
    return model
