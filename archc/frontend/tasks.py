"""Parameter schemas of the built-in training tasks (no torch: `archc check` reads these).

A spec names a task as `task: parity` or `task: {name: parity, n: 4}`; the mapping's
other keys are validated against the task's model here. The generators that use these
parameters live in archc/runtime/tasks/.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class TaskParams(BaseModel):
    """Base of every task's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Integer parameters whose targets can be recomputed from the same inputs, so one
    # batch can supervise several values at once (multi-head curricula).
    multi_head: ClassVar[tuple[str, ...]] = ()

    def min_seq_len(self) -> tuple[int, str, str] | None:
        """(shortest sequence, why, which parameter to shrink) or None if any length works.

        Checked by `archc check` (frontend/train.py) and again when the task is built.
        """
        return None

    def seq_len_problem(self, seq_len: int) -> tuple[str, str] | None:
        """(message, hint) when `seq_len` is too short for these parameters."""
        need = self.min_seq_len()
        if need is None or seq_len >= need[0]:
            return None
        least, why, knob = need
        return (
            f"{why} needs seq_len >= {least}, got {seq_len}",
            f"use seq_len >= {least} or {knob}",
        )


class MqarParams(TaskParams):
    """Multi-query associative recall (Zoology): recall the value bound to each key."""

    vocab: int = Field(default=256, ge=4, description="vocabulary: keys low half, values high")
    num_kv_pairs: int = Field(default=8, gt=0, description="key-value pairs per sequence")
    power_a: float = Field(default=0.01, gt=0, description="power-law query gap exponent")
    random_non_queries: bool = Field(default=True, description="random filler, not token 0")
    repeat_context: int = Field(
        default=1, ge=1, description="JRT-Prompt: the key-value pairs written this many times"
    )

    def min_seq_len(self) -> tuple[int, str, str]:
        p, r = self.num_kv_pairs, self.repeat_context
        copies = f" x repeat_context={r}" if r > 1 else ""
        return (
            2 * p * r + 2 * p,
            f"mqar with num_kv_pairs={p}{copies} (the pairs, then room for every query)",
            ("fewer num_kv_pairs" + (" or a smaller repeat_context" if r > 1 else "")),
        )

    @field_validator("num_kv_pairs")
    @classmethod
    def _enough_keys(cls, v: int, info: ValidationInfo) -> int:
        # Keys are distinct ids from [1, vocab // 2): id 0 is the filler token. `vocab` is
        # declared first, so it is in info.data unless it failed validation itself.
        vocab = info.data.get("vocab")
        if vocab is not None and v > vocab // 2 - 1:
            raise ValueError(
                f"{v} pairs need distinct keys from [1, vocab // 2), "
                f"but vocab {vocab} has only {vocab // 2 - 1}"
            )
        return v


class ParityParams(TaskParams):
    """N-parity: the target at t is the parity of the last n bits."""

    multi_head: ClassVar[tuple[str, ...]] = ("n",)

    n: int = Field(default=3, ge=1, description="bits in the parity window")

    def min_seq_len(self) -> tuple[int, str, str]:
        # The first target is at position n - 1.
        return (
            self.n,
            f"parity with n={self.n} (targets start at position {self.n - 1})",
            ("a smaller n"),
        )


class DmsParams(TaskParams):
    """N-delayed match-to-sample: the target at t is whether x[t] equals x[t - n]."""

    multi_head: ClassVar[tuple[str, ...]] = ("n",)

    n: int = Field(default=3, ge=1, description="delay in steps")

    def min_seq_len(self) -> tuple[int, str, str]:
        # The first target is at position n.
        return (
            self.n + 1,
            f"dms with n={self.n} (targets start at position {self.n})",
            ("a smaller n"),
        )


class CopyParams(TaskParams):
    """Copy: reproduce `length` data tokens after a delimiter."""

    length: int = Field(default=16, gt=0, description="tokens to copy")
    alphabet: int = Field(default=8, ge=2, description="distinct data symbols")

    def min_seq_len(self) -> tuple[int, str, str]:
        n = self.length
        return (
            2 * n + 1,
            f"copy with length={n} (the data, a delimiter, then the copy)",
            ("a smaller length"),
        )


class ReverseParams(TaskParams):
    """Reverse: after a delimiter, emit the `length` data tokens in reverse order,
    teacher-forced (each target step reads the previous target token)."""

    length: int = Field(default=8, gt=0, description="tokens to reverse")
    alphabet: int = Field(default=8, ge=2, description="distinct data symbols")

    def min_seq_len(self) -> tuple[int, str, str]:
        n = self.length
        return (
            2 * n,
            f"reverse with length={n} (the data, a delimiter, then the reversal)",
            ("a smaller length"),
        )


class SelectiveCopyParams(TaskParams):
    """Selective copying (Mamba): copy the data tokens scattered among blanks, in order."""

    tokens: int = Field(default=16, gt=0, description="data tokens to copy")
    alphabet: int = Field(default=8, ge=2, description="distinct data symbols")

    def min_seq_len(self) -> tuple[int, str, str]:
        n = self.tokens
        return (
            2 * n,
            f"selective-copy with tokens={n} (the data among blanks, then {n} markers)",
            ("fewer tokens"),
        )


class TextParams(TaskParams):
    """Byte-level language modelling of a text file."""

    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="held-out tail fraction")


TASK_PARAMS: dict[str, type[TaskParams]] = {
    "mqar": MqarParams,
    "parity": ParityParams,
    "dms": DmsParams,
    "copy": CopyParams,
    "reverse": ReverseParams,
    "selective-copy": SelectiveCopyParams,
    "text": TextParams,
}


def task_names() -> list[str]:
    """Every built-in task name, sorted."""
    return sorted(TASK_PARAMS)


def int_params(name: str) -> list[str]:
    """The integer parameters of task `name` (what a curriculum may schedule)."""
    schema = TASK_PARAMS[name]
    # `bool` is a subclass of int but never a curriculum parameter; compare exactly.
    return [k for k, f in schema.model_fields.items() if f.annotation is int]
