"""Parameter models of the control-structure components: `loop` (with sampled step
counts), `halt`, `repeat` (with depth up-scaling) and `segment`. They subclass
components.Params and are registered in components.py."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from archc.frontend.components import Params

_TIE = re.compile(r"^(all|none|cycle\((\d+)\))$")


class LoopSteps(Params):
    """Sampled step counts: `train` is drawn per forward in training, `eval` is fixed."""

    train: str
    eval: int = Field(gt=0)

    @field_validator("train")
    @classmethod
    def _sampler_form(cls, v: str) -> str:
        if parse_sampler(v) is None:
            raise ValueError("train must be 'uniform(a,b)' with 1 <= a <= b or 'poisson(mean)'")
        return v


_SAMPLER = re.compile(r"^\s*(uniform|poisson)\(\s*([0-9.]+)\s*(?:,\s*([0-9.]+)\s*)?\)\s*$")
_GRAD = re.compile(r"^(full|one-step|last\((\d+)\))$")


def parse_sampler(v: str) -> tuple[str, float, float] | None:
    """('uniform', a, b) or ('poisson', mean, 0) from the text of a step sampler."""
    m = _SAMPLER.match(v)
    if not m:
        return None
    kind, a, b = m.group(1), m.group(2), m.group(3)
    try:
        if kind == "uniform" and b is not None:
            lo, hi = int(a), int(b)
            return ("uniform", float(lo), float(hi)) if 1 <= lo <= hi else None
        if kind == "poisson" and b is None and float(a) > 0:
            return ("poisson", float(a), 0.0)
    except ValueError:
        return None
    return None


class LoopParams(Params):
    steps: int | LoopSteps = Field(default=2, description="n, or {train: sampler, eval: n}")
    tie: str = "all"
    inject: Literal["none", "add", "concat"] = Field(
        default="none", description="combine the carried state with the loop's input x"
    )
    grad: str = Field(default="full", description="full | last(k) | one-step")
    lora: int = Field(default=0, ge=0, description="per-iteration LoRA rank (0: none)")
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="names the loop in paths (layers.1.high.0...) instead of 'loop'",
    )

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, v: int | LoopSteps) -> int | LoopSteps:
        if isinstance(v, int) and v <= 0:
            raise ValueError("steps must be positive")
        return v

    @field_validator("grad")
    @classmethod
    def _grad_form(cls, v: str) -> str:
        m = _GRAD.match(v)
        if not m or (m.group(2) is not None and int(m.group(2)) <= 0):
            raise ValueError("grad must be 'full', 'one-step' or 'last(k)' with k >= 1")
        return v

    def eval_steps(self) -> int:
        """Steps at evaluation (and the fixed count when steps are not sampled)."""
        return self.steps if isinstance(self.steps, int) else self.steps.eval

    def grad_steps(self) -> int:
        """How many final iterations carry gradient (0: all of them)."""
        m = _GRAD.match(self.grad)
        assert m is not None
        return 0 if self.grad == "full" else 1 if self.grad == "one-step" else int(m.group(2))

    @field_validator("tie")
    @classmethod
    def _tie_form(cls, v: str) -> str:
        m = _TIE.match(v)
        if not m or (m.group(2) is not None and int(m.group(2)) <= 0):
            raise ValueError("tie must be 'all', 'none' or 'cycle(k)' with k >= 1")
        return v

    def copies(self) -> int:
        """How many distinct weight copies the loop body has."""
        if self.tie == "all":
            return 1
        if self.tie == "none":
            return self.eval_steps()
        k = int(_TIE.match(self.tie).group(2))  # type: ignore[union-attr]
        return min(k, self.eval_steps()) if isinstance(self.steps, int) else k


class HaltParams(Params):
    """Adaptive depth (HRM's ACT): the body runs up to max_steps times per sample or
    position (`per`), halting by a Q-head or when the state stops changing (`delta`)."""

    max_steps: int = Field(default=4, gt=0)
    criterion: Literal["q-head", "delta"] = "q-head"
    explore: float = Field(default=0.1, ge=0.0, le=1.0, description="q-head exploration")
    threshold: float = Field(default=0.01, gt=0, description="relative state change")
    min_steps: int = Field(default=1, gt=0)
    per: Literal["token", "sample"] = Field(
        default="token", description="token: causal prefix pooling; sample: whole sequence"
    )
    target: Literal["answer", "converged"] | None = Field(
        default=None,
        description="q-head halt target: answer (HRM: the step's prediction is correct; "
        "the default for q-head) or converged (label-free: the state stopped changing)",
    )
    inject: Literal["none", "add"] = Field(
        default="none",
        description="add: the state starts at zero and every step reads state + input "
        "(HRM re-injects the input each segment)",
    )
    supervise: Literal["last", "deep"] = Field(
        default="last",
        description="deep: HRM deep supervision, every step's prediction is scored and "
        "each step starts from the previous state detached",
    )


class UpscaleParams(Params):
    """Depth up-scaling (SOLAR, Kim et al. 2023) of a repeat of n blocks: from training
    step `at_step` the n-block stack becomes 2 (n - drop) blocks, [blocks 0..n-drop-1]
    followed by [blocks drop..n-1] (copied weights)."""

    drop: int = Field(gt=0, description="m: blocks dropped from each copy's seam")
    at_step: int = Field(ge=0, description="training step at which the depth grows")


class RepeatParams(Params):
    n: int = Field(default=2, gt=0)
    upscale: UpscaleParams | None = Field(
        default=None, description="grow the depth during training (SOLAR depth up-scaling)"
    )


_CARRY = re.compile(r"^(memory-tokens|kv-window|fast-weights)\((\d+)\)$")


class SegmentParams(Params):
    """Segment recurrence (RMT / HMT / Transformer-XL): the body runs on segments of
    `length` tokens; `carry` links them: `memory-tokens(n)` (n memory tokens read at the
    front and written at the end of each segment), `kv-window(w)` (attention also sees
    the last w tokens' keys/values) or `fast-weights(h)` (an h-head delta-rule matrix
    memory written by each segment's outputs, read by the next one's inputs). `recall: N`
    adds HMT memory recall over a FIFO of the last N memories; `sensory: j` also reads
    the last j tokens of the previous segment (HMT's sensory memory); `bptt: d` lets
    gradients cross at most d segment transitions."""

    length: int = Field(default=64, gt=0, description="tokens per segment")
    carry: str = Field(
        default="memory-tokens(4)",
        description="memory-tokens(n) | kv-window(w) | fast-weights(heads)",
    )
    bptt: int | None = Field(default=None, ge=0, description="transitions (default: all)")
    recall: int = Field(default=0, ge=0, description="HMT recall FIFO size (0: none)")
    sensory: int = Field(
        default=0, ge=0, description="HMT sensory memory: previous segment's last tokens read"
    )

    @field_validator("carry")
    @classmethod
    def _carry_form(cls, v: str) -> str:
        m = _CARRY.match(v.replace(" ", ""))
        if not m or int(m.group(2)) <= 0:
            raise ValueError(
                "carry must be 'memory-tokens(n)', 'kv-window(w)' or 'fast-weights(heads)' "
                "with a count >= 1"
            )
        return v

    def carry_kind(self) -> tuple[str, int]:
        """('memory', n), ('kv_window', w) or ('fast_weights', heads)."""
        m = _CARRY.match(self.carry.replace(" ", ""))
        assert m is not None
        return m.group(1).replace("-tokens", "").replace("-", "_"), int(m.group(2))
