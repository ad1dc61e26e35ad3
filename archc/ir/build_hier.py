"""Builder of `hier` (multi-timescale hierarchies: fixed stride, H-Net router, HAT split).

The body becomes the op's one region, under `<hier>.inner`, typed on the coarse
sequence (B, T', D) (see ops_hier.region_type); it must keep the width. A hier may sit
inside another hier's body (H-Net with 2 stages, CM-HRNN tiers): its region is then
coarser still. The split rule reads the token ids, which only the top-level graph has.
"""

from __future__ import annotations

from archc.frontend.components_hier import HierParams
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder, width_keeping_region
from archc.ir.graph import Graph, Value
from archc.ir.ops import get_op
from archc.ir.ops_hier import region_type
from archc.ir.types import Attrs, TensorType


def _inner_region(ctx: BuildContext, c: Component, t: TensorType, prefix: str) -> Graph:
    """The body as a region on the coarse type `t`."""
    from archc.ir.build import _items  # build.py imports this module

    return width_keeping_region(
        ctx,
        t,
        prefix,
        c.loc,
        lambda inner, v: _items(inner, c.body, v, prefix),
        "hier body",
        "the inner network must keep its width (set the hier's dim for an inner network "
        "of another width than the fine stream)",
    )


def _token_input(ctx: BuildContext, c: Component) -> Value:
    """The graph's token ids, for the split rule (only the top-level graph has them)."""
    if ctx.graph.inputs:
        node = ctx.graph.node(ctx.graph.inputs[0])
        t = node.outputs[0]
        if isinstance(t, TensorType) and t.dtype == "i64":
            return node.out()
    raise ctx.fail(
        "down: {split: whitespace} reads the token ids: put this hier in the top-level "
        "layers of a model that starts with 'embed' (not inside another hier or a loop)",
        c.loc_of("down"),
    )


def _hier(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: HierParams = c.params  # type: ignore[assignment]
    down, up = p.down.kind(), p.up_mode()
    if up == "linear" and down != "stride":
        raise ctx.fail("up: linear needs a fixed stride (down: {stride: k})", c.loc_of("up"))
    if up == "ema" and down != "router":
        raise ctx.fail(
            "up: ema smooths with the router's boundary probabilities: it needs down: router",
            c.loc_of("up"),
        )
    if up == "cross-attn" and ctx.width(x) % p.heads:
        raise ctx.fail(
            f"cross-attn heads={p.heads} do not divide the width {ctx.width(x)}",
            c.loc_of("heads"),
        )
    if not p.causal and down != "stride":
        raise ctx.fail(
            "causal: false applies to fixed strides; chunked hiers are causal by construction",
            c.loc_of("causal"),
        )
    attrs = {
        "down": down,
        "stride": p.down.stride,
        "pool": p.down.pool,
        "target": float(p.down.target),
        "weight": float(p.down.weight),
        "up": up,
        "causal": p.causal,
        "dim": p.dim if p.dim != ctx.width(x) else None,
        "heads": p.heads,
    }
    inputs = [x]
    if down == "split":
        inputs.append(_token_input(ctx, c))
    full = get_op("hier").with_defaults(attrs)
    coarse = region_type(Attrs(full), [ctx.graph.type_of(x)])
    region = _inner_region(ctx, c, coarse, f"{path}.inner")
    return ctx.emit("hier", attrs, inputs, path, c.loc, (region,))


HIER_BUILDERS: dict[str, Builder] = {"hier": _hier}
