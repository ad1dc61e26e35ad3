"""The Python API: spec text or path -> validated Spec -> graph -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from archc.frontend.resolve import load_spec
from archc.frontend.schema import Spec
from archc.ir.build import build_graph
from archc.ir.graph import Graph
from archc.ir.verify import verify

if TYPE_CHECKING:
    from archc.backends.torch.compiled import CompiledModel
    from archc.passes.base import PassResult
    from archc.passes.pipeline import Pass, PipelineResult


def _looks_like_text(source: str) -> bool:
    return "\n" in source or source.lstrip().startswith(("model", "{"))


def load(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """A validated Spec from a file path or from spec text (YAML or DSL)."""
    if isinstance(source, str) and _looks_like_text(source):
        name = "<dsl>" if source.lstrip().startswith("model ") else "<yaml>"
        return load_spec(name, overrides, text=source)
    return load_spec(source, overrides)


def to_graph(source: str | Path | Spec, overrides: list[str] | tuple[str, ...] = ()) -> Graph:
    """The verified IR graph of a spec."""
    spec = source if isinstance(source, Spec) else load(source, overrides)
    graph = build_graph(spec)
    verify(graph)
    return graph


def optimize(
    graph: Graph,
    passes: str | None = None,
    opt_level: int = 2,
    *,
    device: str | None = None,
    seq_len: int | None = None,
    after_each: Callable[[Pass, PassResult], None] | None = None,
) -> PipelineResult:
    """Run the pass pipeline `passes` (a pipeline string), or -O`opt_level`'s, on `graph`.

    Passes that take `device` / `seq_len` get them unless the string sets them;
    `after_each(pass, result)` sees every step (--print-after-all). The input graph is
    not changed; the result holds the final graph and which passes changed it.
    """
    from archc.passes.pipeline import parse_pipeline, pipeline_for_level, run_pipeline

    text = pipeline_for_level(opt_level) if passes is None else passes
    context = {"device": device or "cpu", "seq_len": seq_len}
    return run_pipeline(graph, parse_pipeline(text, context), after_each=after_each)


def compile(
    source: str | Path | Spec,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = 0,
    *,
    device: str | None = None,
    seq_len: int | None = None,
    passes: str | None = None,
    opt_level: int = 2,
) -> CompiledModel:
    """Compile a spec (path, text or Spec) into a torch.nn.Module.

    Overrides use the CLI syntax: ``["d_model=256", "layers[2].attention.heads=8"]``.
    The module maps token ids (B, T) (or features (B, T, D) when the spec has no embed)
    to (B, T, out). The graph goes through the pass pipeline `passes` (a pipeline
    string such as "cse,dce") or, when None, that of -O`opt_level` (0: none; 2, the
    default: archc.passes.pipeline.O2), for sequences of `seq_len` on `device` ("cpu"
    when None): select-scan-mode fixes scans left at mode "auto" once T is known, and
    assign-kernels records each node's backend. `model.spec_hash` names the spec's
    graph before any pass (checkpoints stay valid across devices and -O levels).
    """
    from archc.backends.torch.compiled import compile_graph
    from archc.ir.printer import structural_hash

    spec = source if isinstance(source, Spec) else load(source, overrides)
    graph = to_graph(spec)
    spec_hash = structural_hash(graph)
    graph = optimize(graph, passes, opt_level, device=device, seq_len=seq_len).graph
    model = compile_graph(graph, seed=seed)
    model.spec = spec
    model.spec_hash = spec_hash
    return model
