"""The Python API: spec text or path -> validated Spec -> graph -> nn.Module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from archc.frontend.resolve import load_spec
from archc.frontend.schema import Spec
from archc.ir.build import build_graph
from archc.ir.graph import Graph
from archc.ir.verify import verify

if TYPE_CHECKING:
    from archc.backends.torch.compiled import CompiledModel


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


def compile(
    source: str | Path | Spec,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = 0,
    *,
    device: str | None = None,
    seq_len: int | None = None,
) -> CompiledModel:
    """Compile a spec (path, text or Spec) into a torch.nn.Module.

    Overrides use the CLI syntax: ``["d_model=256", "layers[2].attention.heads=8"]``.
    The module maps token ids (B, T) (or features (B, T, D) when the spec has no embed)
    to (B, T, out). With `device` ("cpu", "cuda"), the select-scan-mode pass fixes every
    scan left at mode "auto" for sequences of `seq_len` on that device; without it the
    modules choose at run time. `model.spec_hash` names the spec's graph before any
    such choice (checkpoints stay valid across devices).
    """
    from archc.backends.torch.compiled import compile_graph
    from archc.ir.printer import structural_hash

    spec = source if isinstance(source, Spec) else load(source, overrides)
    graph = to_graph(spec)
    spec_hash = structural_hash(graph)
    if device is not None:
        from archc.passes.select_scan_mode import SelectScanMode

        graph = SelectScanMode(seq_len, device).run(graph).graph
    model = compile_graph(graph, seed=seed)
    model.spec = spec
    model.spec_hash = spec_hash
    return model
