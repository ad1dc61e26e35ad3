"""Built-in training tasks, generated from a seed (no downloads) or read from a text file.

`make_task(name, params, seq_len, data)` builds one; `Task.batch(split, index, size,
seed)` is a pure function of its arguments. Parameter schemas are in
archc/frontend/tasks.py (torch-free, for `archc check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archc.frontend.tasks import TASK_PARAMS, TaskParams
from archc.runtime.tasks.base import IGNORE, Batch, Task, TaskError, validate_params
from archc.runtime.tasks.bits import DmsTask, ParityTask
from archc.runtime.tasks.copying import CopyTask, SelectiveCopyTask
from archc.runtime.tasks.mqar import MqarTask
from archc.runtime.tasks.reverse import ReverseTask
from archc.runtime.tasks.text import TextTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        MqarTask,
        ParityTask,
        DmsTask,
        CopyTask,
        SelectiveCopyTask,
        TextTask,
        ReverseTask,
    )
}
assert set(TASKS) == set(TASK_PARAMS), "every task schema needs a generator, and back"


def make_task(
    name: str,
    params: TaskParams | Mapping[str, Any] | None,
    seq_len: int,
    data: Path | str | None = None,
) -> Task:
    """The task `name` with `params` (a validated model, a mapping, or None for defaults)."""
    cls = TASKS.get(name)
    if cls is None:
        raise TaskError(
            f"unknown task '{name}'", field="task", hint=f"tasks: {', '.join(sorted(TASKS))}"
        )
    if not isinstance(params, cls.params_type):
        raw = params.model_dump() if isinstance(params, TaskParams) else dict(params or {})
        params = validate_params(cls.params_type, raw)
    return cls(params, seq_len, None if data is None else Path(data))


__all__ = ["IGNORE", "TASKS", "Batch", "Task", "TaskError", "make_task"]
