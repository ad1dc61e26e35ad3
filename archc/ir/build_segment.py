"""Builder of `segment` (segment recurrence: RMT memory tokens, HMT recall, KV window).

The body becomes the op's one region, under `<segment>.body`; it sees a segment (with
its memory slots) as a (B, T, D) sequence and must keep the width.
"""

from __future__ import annotations

from archc.frontend.components import SegmentParams
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder, width_keeping_region
from archc.ir.graph import Graph, Value
from archc.ir.types import TensorType


def _body_region(ctx: BuildContext, c: Component, x: Value, prefix: str) -> Graph:
    """The segment body as a region whose input has the type of `x`."""
    from archc.ir.build import _items  # build.py imports this module

    t = ctx.graph.type_of(x)
    assert isinstance(t, TensorType)
    return width_keeping_region(
        ctx,
        t,
        prefix,
        c.loc,
        lambda inner, v: _items(inner, c.body, v, prefix),
        "segment body",
        "a segment body must keep the width (its outputs carry to the next segment)",
    )


def _segment(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: SegmentParams = c.params  # type: ignore[assignment]
    if not c.body:
        raise ctx.fail("segment needs a body: the layers run on every segment", c.loc)
    carry, n = p.carry_kind()
    if p.recall and carry != "memory":
        raise ctx.fail(
            "recall reads a FIFO of memory tokens: it needs carry: memory-tokens(n)",
            c.loc_of("recall"),
        )
    if p.sensory and carry != "memory":
        raise ctx.fail(
            "sensory memory is read with the memory tokens: it needs carry: memory-tokens(n)",
            c.loc_of("sensory"),
        )
    if p.sensory > p.length:
        raise ctx.fail(
            f"sensory={p.sensory} exceeds the segment length {p.length}: it reads the "
            "previous segment's last tokens",
            c.loc_of("sensory"),
        )
    if carry == "fast_weights" and ctx.width(x) % n:
        raise ctx.fail(
            f"fast-weights heads={n} must divide the width {ctx.width(x)}", c.loc_of("carry")
        )
    region = _body_region(ctx, c, x, f"{path}.body")
    attrs = {
        "length": p.length,
        "carry": carry,
        "mem": n if carry == "memory" else 0,
        "window": n if carry == "kv_window" else None,
        "bptt": p.bptt,
        "recall": p.recall,
        "heads": n if carry == "fast_weights" else 0,
        "sensory": p.sensory,
    }
    return ctx.emit("segment", attrs, [x], path, c.loc, (region,))


SEGMENT_BUILDERS: dict[str, Builder] = {"segment": _segment}
