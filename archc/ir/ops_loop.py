"""The `loop` op (looped / recursive layers) and the `halt` op (adaptive depth).

loop attributes:
- steps: the iteration count (the eval count when `sampler` is set);
- copies: distinct weight copies; iteration i runs region i % copies;
- inject: none | add | concat — the body's input at every iteration is the carried
  state combined with the loop's input x (state + x, or linear([state, x]) back to
  the width with the loop's own `inject.*` parameters); with injection the state
  starts at zero, so the first iteration of `add` sees x itself;
- grad: how many final iterations carry gradient (0: all); earlier ones run under
  no_grad, so the state entering the first gradient iteration is detached;
- lora: the per-iteration LoRA rank r (0: none); lora_targets lists (in, out, count)
  per linear t of the body (see `lora_linears`); each of the `count` iterations i that
  run its region owns an adapter `lora.<t>.<i>.a` (r, in) and `lora.<t>.<i>.b` (out, r);
- sampler: "" (fixed steps) or the training sampler "uniform(a,b)" | "poisson(mean)".

halt attributes: max_steps, criterion (q-head | delta), explore (the probability of a
random minimum depth in training, q-head only), threshold (the relative state change
below which delta halts, and q-head's halt target is 1), min_steps, per (token: each
position halts on its causal prefix; sample: the whole sequence), target (q-head's halt
target: answer -- HRM's "the prediction after this step is correct", which needs the
training targets and the readout; converged -- the label-free "the step changed the
state by less than threshold"), supervise (last: the loss scores the final state;
deep: HRM's deep supervision -- every step's prediction is scored and each step
starts from the previous state detached). One region, the body; the semantics and the
Q-learning targets are in backends/torch/modules/loops.py `Halt`, the readout in
archc/ir/readout.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from archc.ir.opdef import (
    INT,
    NUM,
    STR,
    AttrSpec,
    Cost,
    OpDef,
    ShapeError,
    same_type,
    tensor_of,
)

if TYPE_CHECKING:
    from archc.ir.graph import Node
from archc.ir.types import Attrs, ParamSpec, TensorType, Type


def lora_linears(regions: Sequence[object]) -> list[tuple[object, int]]:
    """(linear node, region index) of every adaptable linear inside `regions`, in a
    fixed order (regions in order, nodes in graph order, nested regions depth-first).
    A linear reusing another node's weight (a tied head) gets no adapter."""
    found: list[tuple[object, int]] = []

    def walk(graph: object, c: int) -> None:
        for node in graph.nodes():  # type: ignore[attr-defined]
            if node.op == "linear" and node.attrs["weight_from"] is None:
                found.append((node, c))
            for sub in node.regions:
                walk(sub, c)

    for c, region in enumerate(regions):
        walk(region, c)
    return found


def runs_of(region: int, steps: int, copies: int) -> int:
    """How many of `steps` iterations run region `region` (i % copies == region)."""
    return len(range(region, steps, copies))


def _loop_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    d = tensor_of(ins[0], "loop").feature
    ps: list[ParamSpec] = []
    if attrs["inject"] == "concat":
        bound = f"uniform({1.0 / math.sqrt(2 * d)!r})"
        ps.append(ParamSpec("inject.weight", (d, 2 * d), bound))
        ps.append(ParamSpec("inject.bias", (d,), "zeros", decay=False))
    r = attrs["lora"]
    for t, (d_in, d_out, count) in enumerate(attrs["lora_targets"]):
        for i in range(count):
            # A small and random, B zero: every adapter starts as no change at all.
            ps.append(
                ParamSpec(f"lora.{t}.{i}.a", (r, d_in), f"uniform({1.0 / math.sqrt(d_in)!r})")
            )
            ps.append(ParamSpec(f"lora.{t}.{i}.b", (d_out, r), "zeros"))
    return tuple(ps)


def _loop_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    if attrs["lora"] == 0 and attrs["lora_targets"]:
        raise ShapeError("lora_targets given without a lora rank")
    return same_type(attrs, ins)


def _loop_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    """Per token, on top of the body's: every step's injection (add: D; concat: the
    (D, 2D) linear) and its LoRA adapters (B A x: 2 r (in + out) per adapted linear)."""
    d = tensor_of(ins[0], "loop").feature
    matmul = 2.0 * d * 2 * d if attrs["inject"] == "concat" else 0.0
    matmul += sum(2.0 * attrs["lora"] * (i + o) for i, o, _ in attrs["lora_targets"])
    add = float(d) if attrs["inject"] == "add" else 0.0  # elementwise
    return Cost(flops=attrs["steps"] * matmul, ew_flops=attrs["steps"] * add)


LOOP_OP = OpDef(
    "loop",
    (1, 1),
    {
        "steps": AttrSpec(INT),
        "copies": AttrSpec(INT, 1),
        "inject": AttrSpec(STR, "none", ("none", "add", "concat")),
        "grad": AttrSpec(INT, 0),
        "lora": AttrSpec(INT, 0),
        "lora_targets": AttrSpec((tuple,), ()),
        "sampler": AttrSpec(STR, ""),
    },
    _loop_shape,
    params=_loop_params,
    cost=_loop_cost,
    regions=True,
    doc="apply the body regions `steps` times; step s uses region s % copies",
)


def _halt_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    if attrs["criterion"] != "q-head":
        return ()
    d = tensor_of(ins[0], "halt").feature
    return (
        # Zero weights (HRM initialises the Q-head to a constant): Q_halt == Q_continue,
        # so an untrained model never halts early and runs every step.
        ParamSpec("q.weight", (2, d), "zeros"),
        ParamSpec("q.bias", (2,), "zeros", decay=False),
    )


def _halt_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = tensor_of(ins[0], "halt")
    if not isinstance(t, TensorType) or len(t.dims) != 3:
        raise ShapeError(f"halt expects a (B, T, D) tensor, got {t}")
    return (t,)


def _halt_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    """Per token and step (at most max_steps): the Q-head's pooling and (2, D) map, or
    the delta criterion's state difference; plus the masked state update."""
    d = tensor_of(ins[0], "halt").feature
    q_head = 4.0 * d if attrs["criterion"] == "q-head" else 0.0  # the (2, D) map
    ew = d if attrs["criterion"] == "q-head" else 3.0 * d  # pooling, or the difference
    return Cost(flops=attrs["max_steps"] * q_head, ew_flops=attrs["max_steps"] * (ew + 3.0 * d))


HALT_OP = OpDef(
    "halt",
    (1, 1),
    {
        "max_steps": AttrSpec(INT),
        "criterion": AttrSpec(STR, "q-head", ("q-head", "delta")),
        "explore": AttrSpec(NUM, 0.1),
        "threshold": AttrSpec(NUM, 0.01),
        "min_steps": AttrSpec(INT, 1),
        "per": AttrSpec(STR, "token", ("token", "sample")),
        "target": AttrSpec(STR, "converged", ("answer", "converged")),
        "supervise": AttrSpec(STR, "last", ("last", "deep")),
        "inject": AttrSpec(STR, "none", ("none", "add")),
    },
    _halt_shape,
    params=_halt_params,
    cost=_halt_cost,
    regions=True,
    doc="run the body region up to max_steps times with per-sample halting (ACT)",
)


def needs_readout(node: Node) -> bool:
    """True if a halt node's training scores the model's prediction after every step
    (deep supervision, or the q-head's answer-correctness target)."""
    a = node.attrs
    return node.op == "halt" and (
        a["supervise"] == "deep" or (a["criterion"] == "q-head" and a["target"] == "answer")
    )
