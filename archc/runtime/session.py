"""A trained run reopened for `archc eval` and `archc generate`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from archc.api import compile as compile_spec
from archc.api import load
from archc.backends.torch.compiled import CompiledModel
from archc.diagnostics import error
from archc.frontend.schema import Spec
from archc.runtime import checkpoint as ckpt
from archc.runtime.curriculum import CurriculumState
from archc.runtime.distributed import pick_device
from archc.runtime.objective import evaluate
from archc.runtime.prepare import build_curriculum, build_task, check_model_fits
from archc.runtime.rundir import SPEC, find_run
from archc.runtime.tasks import Task, TaskError
from archc.runtime.tasks.text import TextTask, load_bytes
from archc.runtime.train import autocast_for


@dataclass
class Session:
    """A run's spec, task (at the curriculum level reached) and trained model."""

    spec: Spec
    task: Task
    curriculum: CurriculumState
    model: CompiledModel
    step: int
    device: torch.device


def open_run(run_dir: Path, device: str = "auto") -> Session:
    """Rebuild the model of `run_dir` and load its last checkpoint."""
    find_run(run_dir)
    spec = load(run_dir / SPEC)
    task = build_task(spec)
    curriculum = build_curriculum(spec, task)
    dev = pick_device(device)
    model = compile_spec(spec, seed=spec.train.seed, device=dev.type, seq_len=spec.train.seq_len)
    check_model_fits(spec, model.graph, task, curriculum.heads)
    state = ckpt.load(run_dir / ckpt.CHECKPOINT, dev)
    model.load_state_dict(state["model"])
    curriculum.load_state_dict(state["curriculum"])
    model.to(dev).eval()
    return Session(spec, task, curriculum, model, int(state["step"]), dev)


def evaluate_run(
    session: Session, batches: int | None = None, data: Path | None = None
) -> dict[str, float]:
    """Eval metrics of a run: text over its held-out split (or all of `data`), tasks on
    fixed seeded batches."""
    cfg = session.spec.train
    task = session.curriculum.task()
    count = batches if batches is not None else (None if task.is_text else 4 * cfg.eval_batches)
    if data is not None:
        if not isinstance(task, TextTask):
            raise error(f"--data applies to text runs; this run trains on '{task.name}'")
        try:
            stream = task.tiled_batches(load_bytes(data), cfg.batch_size, count)
            first = next(stream)
        except TaskError as exc:
            raise error(f"--data {data}: {exc}", hint=exc.hint) from exc
        stream = itertools.chain([first], stream)
    else:
        stream = task.eval_batches(cfg.batch_size, count, cfg.seed)
    autocast = autocast_for(cfg.precision, session.device)
    return evaluate(session.model, session.curriculum, stream, session.device, autocast)
