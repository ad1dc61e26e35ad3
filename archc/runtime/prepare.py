"""What train, eval and generate share: the task of a spec and checks that the model fits it.

User mistakes found here (a missing data file, a sequence longer than the data, a
model whose vocabulary is too small for the task) become diagnostics at the spec line
that caused them.
"""

from __future__ import annotations

from pathlib import Path

from archc.diagnostics import DiagnosticError, error
from archc.frontend.schema import Spec
from archc.frontend.tasks import task_names
from archc.ir.graph import Graph
from archc.ir.types import TensorType
from archc.runtime.curriculum import CurriculumState
from archc.runtime.tasks import Task, TaskError, make_task


def spec_error(spec: Spec, key: str, message: str, hint: str | None = None) -> DiagnosticError:
    """An error at the line where `key` ("vocab", "train.seq_len", ...) was written."""
    loc = spec.key_locs.get(key)
    while loc is None and "." in key:
        key = key.rsplit(".", 1)[0]  # "train.task.n" was defaulted: point at "train.task"
        loc = spec.key_locs.get(key)
    return error(message, loc or spec.loc, hint=hint)


def data_path(spec: Spec) -> Path | None:
    """train.data as a path: relative to the spec file, or to the working directory
    when it came from the command line."""
    raw = spec.train.data
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    loc = spec.key_locs.get("train.data")
    if loc is not None and not loc.file.startswith("<"):
        return (Path(loc.file).parent / path).resolve()
    return path.resolve()


def build_task(spec: Spec) -> Task:
    """The spec's task at its configured parameters."""
    cfg = spec.train
    if cfg.task is None:
        raise spec_error(
            spec,
            "train",
            f"model '{spec.model}' has no task to train on",
            hint=f"pass --task NAME or set train.task ({', '.join(task_names())})",
        )
    try:
        return make_task(cfg.task.name, cfg.task.params, cfg.seq_len, data_path(spec))
    except TaskError as exc:
        raise spec_error(spec, f"train.{exc.field or 'task'}", str(exc), exc.hint) from exc


def build_curriculum(spec: Spec, task: Task) -> CurriculumState:
    """The curriculum of a spec, with every level's task built up front: a value that
    does not fit (say n beyond seq_len) is reported now, not when training reaches it."""
    state = CurriculumState(spec.train.curriculum, task)
    cfg = spec.train.curriculum
    for v in state.values:
        assert cfg is not None
        try:
            task.with_params(**{cfg.param: v})
        except TaskError as exc:
            raise spec_error(
                spec, "train.curriculum", f"curriculum value {cfg.param}={v}: {exc}", exc.hint
            ) from exc
    return state


def output_width(graph: Graph) -> int:
    t = graph.type_of(graph.outputs[0])
    assert isinstance(t, TensorType)
    return t.feature


def check_model_fits(spec: Spec, graph: Graph, task: Task, heads: int = 1) -> None:
    """The model reads the task's tokens and produces enough logits (per head)."""
    first = graph.node(graph.inputs[0])
    if first.attrs["kind"] != "tokens":
        raise spec_error(
            spec,
            "layers",
            f"model '{spec.model}' reads feature vectors, but task '{task.name}' gives token ids",
            hint="start the model with 'embed'",
        )
    vocab = spec.vocab or 0
    if vocab < task.vocab:
        raise spec_error(
            spec,
            "vocab",
            f"task '{task.name}' uses token ids up to {task.vocab - 1}, "
            f"but the model's vocab is {vocab}",
            hint=f"set vocab: {task.vocab}",
        )
    width = output_width(graph)
    if heads > 1 and width != task.classes * heads:
        raise spec_error(
            spec,
            "train.curriculum",
            f"a multi-head curriculum over {heads} values needs {heads} x {task.classes} = "
            f"{heads * task.classes} outputs, but the model produces {width}",
            hint=f"end the model with head: {{out: {heads * task.classes}}}",
        )
    if width < task.classes:
        raise spec_error(
            spec,
            "layers",
            f"task '{task.name}' has {task.classes} classes, but the model outputs {width} "
            "values per position",
            hint=f"end the model with head: {{out: {task.classes}}}",
        )
