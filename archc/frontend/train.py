"""The `train:` section of a spec: optimizer, schedule, task, curriculum, run settings.

Validated like the rest of the spec (unknown keys are errors, located at the user's
line) without importing torch, so `archc check` catches a mistyped `lr` before a run
starts. The task is written `task: parity` or `task: {name: parity, n: 4}`; its own
parameters are checked against the task's schema in frontend/tasks.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from archc.diagnostics import Collector, SourceLoc, did_you_mean
from archc.frontend.locs import LocMap, Path
from archc.frontend.tasks import TASK_PARAMS, TaskParams, int_params, task_names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GradNoise(_Section):
    """Gaussian gradient noise with variance eta / (1 + t)^gamma (Neelakantan et al.)."""

    eta: float = Field(default=0.01, gt=0, description="initial noise variance")
    gamma: float = Field(default=0.55, ge=0, description="annealing exponent")


class Curriculum(_Section):
    """A task parameter (e.g. parity's n) moved from `start` to `end` during training.

    `mode: single` trains on the current value only; `mode: multi` keeps one output
    head per value reached so far (the model's head has classes * K outputs, K the
    number of values), as in the single- vs multi-head curricula of the long-timescales
    study. The value advances when eval accuracy reaches `advance_at`, or every
    `every` steps.
    """

    param: str
    start: int
    end: int
    step: int = Field(default=1, description="increment per advance (may be negative)")
    mode: Literal["single", "multi"] = "single"
    advance_at: float | None = Field(default=None, gt=0, le=1)
    every: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Curriculum:
        if (self.advance_at is None) == (self.every is None):
            raise ValueError("set exactly one of 'advance_at' (accuracy) or 'every' (steps)")
        if self.step == 0 or (self.end - self.start) * self.step < 0:
            raise ValueError(f"step {self.step} never takes {self.start} to {self.end}")
        if (self.end - self.start) % self.step:
            raise ValueError(f"{self.start} + k * {self.step} never equals {self.end}")
        return self

    def values(self) -> list[int]:
        """Every value the parameter takes, in order."""
        return list(range(self.start, self.end + (1 if self.step > 0 else -1), self.step))


class TaskRef(_Section):
    """A built-in task and its parameters."""

    name: str
    params: SerializeAsAny[TaskParams]


class TrainConfig(_Section):
    """Everything `archc train` needs besides the model."""

    task: TaskRef | None = None
    data: str | None = Field(default=None, description="text file for the text task")
    steps: int = Field(default=1000, gt=0)
    batch_size: int = Field(default=32, gt=0)
    seq_len: int = Field(default=128, gt=0)
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(default=3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: int = Field(default=0, ge=0, description="linear warm-up steps")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor / lr")
    grad_clip: float | None = Field(default=1.0, gt=0)
    grad_noise: GradNoise | None = None
    curriculum: Curriculum | None = None
    seed: int = 0
    precision: Literal["auto", "float32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_interval: int = Field(default=100, ge=0, description="0: evaluate at the end only")
    eval_batches: int = Field(default=4, gt=0)
    log_interval: int = Field(default=10, gt=0)
    checkpoint_interval: int = Field(default=100, ge=0, description="0: at the end only")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must lie in [0, 1)")
        return v


FIELDS = list(TrainConfig.model_fields)


def build_train(
    raw: Any, locs: LocMap, diags: Collector
) -> tuple[TrainConfig | None, dict[str, SourceLoc]]:
    """Validate raw `train:` data; returns (config or None on errors, locations).

    Locations are keyed by dotted path: "train.seq_len", "train.task.n", ...
    """
    from archc.frontend.schema import report_validation  # schema imports this module

    base: Path = ("train",)
    if raw is None:
        return TrainConfig(), {}
    if not isinstance(raw, dict):
        diags.error("'train' must be a mapping of settings", locs.value(base))
        return None, {}
    data = dict(raw)
    where = {f"train.{k}": loc for k in data if (loc := locs.value((*base, k))) is not None}
    task = _task(data.pop("task", None), locs, diags, where)
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        report_validation(exc, base, locs, diags, "'train'", FIELDS)
        return None, where
    if task is False:
        return None, where
    config = config.model_copy(update={"task": task})
    if task is not None:
        problem = task.params.seq_len_problem(config.seq_len)
        if problem is not None:
            at = locs.value((*base, "seq_len")) or locs.value((*base, "task"))
            diags.error(problem[0], at, hint=problem[1])
    if config.curriculum is not None:
        _check_curriculum(config, locs, diags)
    return config, where


def _task(
    raw: Any, locs: LocMap, diags: Collector, where: dict[str, SourceLoc]
) -> TaskRef | bool | None:
    """The task reference, None when absent, False after reporting an error."""
    from archc.frontend.schema import report_validation

    base: Path = ("train", "task")
    if raw is None:
        return None
    if isinstance(raw, str):
        name, params, name_path = raw, {}, base
    elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
        params = {k: v for k, v in raw.items() if k != "name"}
        name, name_path = raw["name"], (*base, "name")
        for k in params:
            if (loc := locs.value((*base, k))) is not None:
                where[f"train.task.{k}"] = loc
    else:
        diags.error(
            "'task' must be a task name or a mapping with 'name' and the task's parameters",
            locs.value(base),
            hint=f"tasks: {', '.join(task_names())}",
        )
        return False
    schema = TASK_PARAMS.get(name)
    if schema is None:
        diags.error(
            f"unknown task '{name}'",
            locs.value(name_path),
            hint=did_you_mean(name, task_names()) or f"tasks: {', '.join(task_names())}",
        )
        return False
    try:
        validated = schema.model_validate(params)
    except ValidationError as exc:
        report_validation(exc, base, locs, diags, f"task '{name}'", list(schema.model_fields))
        return False
    return TaskRef(name=name, params=validated)


def _check_curriculum(config: TrainConfig, locs: LocMap, diags: Collector) -> None:
    cur = config.curriculum
    assert cur is not None
    at = locs.value(("train", "curriculum", "param")) or locs.value(("train", "curriculum"))
    if config.task is None:
        diags.error(
            "a curriculum needs a task",
            locs.key(("train", "curriculum")) or at,
            hint="set train.task",
        )
        return
    name = config.task.name
    allowed = int_params(name)
    if cur.param not in allowed:
        diags.error(
            f"task '{name}' has no integer parameter '{cur.param}' to schedule",
            at,
            hint=did_you_mean(cur.param, allowed)
            or f"integer parameters: {', '.join(allowed) or 'none'}",
        )
        return
    if cur.mode == "multi" and cur.param not in TASK_PARAMS[name].multi_head:
        diags.error(
            f"task '{name}' cannot train '{cur.param}' multi-head (its inputs depend on it)",
            locs.value(("train", "curriculum", "mode")) or at,
        )
    # Every value the curriculum reaches must be a valid task parameter, or the run
    # would fail at that level, possibly hours in.
    base = config.task.params.model_dump()
    for v in cur.values():
        key = "start" if v == cur.start else "end"
        where = locs.value(("train", "curriculum", key)) or at
        try:
            params = TASK_PARAMS[name].model_validate({**base, cur.param: v})
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            diags.error(f"curriculum {cur.param}={v} is not a valid '{name}' task: {msg}", where)
            return
        problem = params.seq_len_problem(config.seq_len)
        if problem is not None:
            diags.error(f"curriculum {cur.param}={v}: {problem[0]}", where, hint=problem[1])
            return
