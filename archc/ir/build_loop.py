"""Builders of the looped-layer control structures: `loop` and `halt`.

A loop's body copy c lives under `<loop>.<c>` (tie: all has one copy, none one per
step, cycle(k) k of them); a halt's body under `<halt>.0`.
"""

from __future__ import annotations

from archc.diagnostics import Collector
from archc.frontend.components import HaltParams, LoopParams
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder
from archc.ir.graph import Graph, Value
from archc.ir.ops_loop import lora_linears, needs_readout, runs_of
from archc.ir.readout import readout_of
from archc.ir.types import ParamSpec


def _loop(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    from archc.ir.build import _check_unroll, _region  # build.py imports this module

    p: LoopParams = c.params  # type: ignore[assignment]
    if p.name is not None:  # `name: high` -> paths and state_dict keys read layers.1.high
        path = f"{path.rsplit('.', 1)[0]}.{p.name}"
    steps, copies = p.eval_steps(), p.copies()
    sampled = not isinstance(p.steps, int)
    if sampled and p.tie == "none":
        raise ctx.fail(
            "sampled steps need a tied body (tie: all or cycle(k)): an untied loop has "
            "one weight copy per step, so its step count is fixed",
            c.loc_of("tie"),
        )
    if sampled and p.lora:
        raise ctx.fail(
            "per-iteration LoRA needs a fixed step count (one adapter per iteration)",
            c.loc_of("lora"),
        )
    if p.lora and p.tie == "none":
        raise ctx.fail(
            "lora adapts a tied body per iteration; with tie: none every step already "
            "has its own weights",
            c.loc_of("lora"),
        )
    _check_unroll(ctx, c, copies, "steps" if copies == steps else "tie")
    regions = tuple(_region(ctx, c.body, x, f"{path}.{i}", c.loc) for i in range(copies))
    targets: tuple[tuple[int, int, int], ...] = ()
    if p.lora:
        found = lora_linears(regions)
        if not found:
            raise ctx.fail("lora needs at least one linear inside the loop body", c.loc_of("lora"))
        # A linear's weight is (out, in): its widths without re-deriving types.
        targets = tuple(
            (*reversed(_weight(node).shape), runs_of(rc, steps, copies)) for node, rc in found
        )
    attrs = {
        "steps": steps,
        "copies": copies,
        "inject": p.inject,
        "grad": p.grad_steps(),
        "lora": p.lora,
        "lora_targets": targets,
        "sampler": "" if isinstance(p.steps, int) else p.steps.train.replace(" ", ""),
    }
    return ctx.emit("loop", attrs, [x], path, c.loc, regions)


def _weight(node: object) -> ParamSpec:
    return next(p for p in node.params if p.name == "weight")  # type: ignore[attr-defined]


def _halt(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    from archc.ir.build import _region  # build.py imports this module

    p: HaltParams = c.params  # type: ignore[assignment]
    if p.min_steps > p.max_steps:
        raise ctx.fail(
            f"halt min_steps={p.min_steps} exceeds max_steps={p.max_steps}", c.loc_of("min_steps")
        )
    if p.target is not None and p.criterion != "q-head":
        raise ctx.fail("target is the q-head criterion's halt target", c.loc_of("target"))
    region = _region(ctx, c.body, x, f"{path}.0", c.loc)
    attrs = {
        "max_steps": p.max_steps,
        "criterion": p.criterion,
        "explore": float(p.explore),
        "threshold": float(p.threshold),
        "min_steps": p.min_steps,
        "per": p.per,
        "target": p.target or ("answer" if p.criterion == "q-head" else "converged"),
        "supervise": p.supervise,
        "inject": p.inject,
    }
    return ctx.emit("halt", attrs, [x], path, c.loc, (region,))


def check_readouts(graph: Graph, diags: Collector) -> None:
    """A halt trained on per-step predictions must sit in the top-level graph, with the
    layers after it reading its result alone (archc/ir/readout.py)."""
    for node in graph.walk():
        if not needs_readout(node):
            continue
        what = "deep supervision" if node.attrs["supervise"] == "deep" else "target: answer"
        hint = "or use `target: converged` (label-free) and `supervise: last`"
        if node.id not in graph or graph.node(node.id) is not node:
            diags.error(
                f"halt with {what} scores the model's prediction after every step, so it "
                "must be a top-level layer, not inside another structure",
                node.loc,
                hint=hint,
            )
            continue
        why = readout_of(graph, node)
        if isinstance(why, str):
            diags.error(
                f"halt with {what} scores the model's prediction after every step, which "
                f"needs the layers after it to read only its result: {why}",
                node.loc,
                hint=hint,
            )


LOOP_BUILDERS: dict[str, Builder] = {"loop": _loop, "halt": _halt}
