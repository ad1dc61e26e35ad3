"""Builders of the `select` components: sparse_attention (top-k block retrieval +
block-sparse attention), select (CoLa layer-path programs) and nested (SortedNet)."""

from __future__ import annotations

from archc.frontend.components import (
    NestedParams,
    RepeatParams,
    SelectParams,
    SparseAttentionParams,
)
from archc.frontend.schema import Component, Ref
from archc.ir.build_ctx import BuildContext, Builder, width_keeping_region
from archc.ir.graph import Value
from archc.ir.types import TensorType


def _sparse_attention(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """q/k/v projections (+ rope), a block_attention node, the output projection."""
    p: SparseAttentionParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    kvh = p.kv_heads or p.heads
    if d % p.heads:
        raise ctx.fail(
            f"sparse_attention heads={p.heads} do not divide the width {d}", c.loc_of("heads")
        )
    if p.heads % kvh:
        raise ctx.fail(
            f"sparse_attention kv_heads={kvh} must divide heads={p.heads}", c.loc_of("kv_heads")
        )
    if p.levels == 1:
        for name in ("fanout", "super_topk"):
            if getattr(p, name) is not None:
                raise ctx.fail(
                    f"sparse_attention {name} applies to the hierarchical selection only; "
                    "set levels: 2 or remove it",
                    c.loc_of(name),
                )
    else:
        for name in ("fanout", "super_topk"):
            if getattr(p, name) is None:
                raise ctx.fail(
                    f"sparse_attention levels: 2 needs '{name}' (blocks per super-block, "
                    "super-blocks kept per query)",
                    c.loc_of("levels"),
                )
    hd = d // p.heads
    if p.pos == "rope" and hd % 2:
        raise ctx.fail(f"rope needs an even head width, got {hd}", c.loc_of("pos"))
    q = ctx.emit("linear", {"out": d, "bias": p.bias}, [x], f"{path}.q", c.loc)
    k = ctx.emit("linear", {"out": kvh * hd, "bias": p.bias}, [x], f"{path}.k", c.loc)
    v = ctx.emit("linear", {"out": kvh * hd, "bias": p.bias}, [x], f"{path}.v", c.loc)
    if p.pos == "rope":
        base = float(p.rope_base)
        q = ctx.emit(
            "posenc", {"kind": "rope", "heads": p.heads, "base": base}, [q], f"{path}.rope_q", c.loc
        )
        k = ctx.emit(
            "posenc", {"kind": "rope", "heads": kvh, "base": base}, [k], f"{path}.rope_k", c.loc
        )
    a = ctx.emit(
        "block_attention",
        {
            "heads": p.heads,
            "kv_heads": kvh,
            "block": p.block,
            "topk": p.topk,
            "window": p.window,
            "fanout": p.fanout,
            "super_topk": p.super_topk,
        },
        [q, k, v],
        f"{path}.sparse",
        c.loc,
    )
    return ctx.emit("linear", {"out": d, "bias": p.bias}, [a], f"{path}.o", c.loc)


def _select(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """A pool of layers (the body, one region per layer some program runs) run in the
    order of `program`, or of each sample's program among `programs`."""
    from archc.ir.build import _layer  # build.py imports this module: import late

    p: SelectParams = c.params  # type: ignore[assignment]
    if not c.body:
        raise ctx.fail("select needs a body: the pool of layers its program indexes", c.loc)
    programs = p.all_programs()
    bad = [i for prog in programs for i in prog if i >= len(c.body)]
    if bad:
        raise ctx.fail(
            f"select program index {bad[0]} is out of range: the pool has {len(c.body)} "
            f"layers (0..{len(c.body) - 1})",
            c.loc_of("program" if p.program is not None else "programs"),
        )
    t = ctx.graph.type_of(x)
    assert isinstance(t, TensorType)
    # Only the layers the program runs are built (a skipped layer has no weights); each
    # keeps its pool index in its path. The op's program indexes the built regions.
    used = sorted({i for prog in programs for i in prog})
    regions = []
    for i in used:
        layer = c.body[i]
        name = layer.name if isinstance(layer, Ref) else layer.kind
        prefix = f"{path}.{i}.{name}"
        region = width_keeping_region(
            ctx,
            t,
            prefix,
            layer.loc,
            lambda inner, v, layer=layer, prefix=prefix: _layer(inner, layer, v, prefix),
            f"select pool layer {i}",
            "a path program needs every pool layer to keep the width",
        )
        regions.append(region)
    remapped = tuple(tuple(used.index(i) for i in prog) for prog in programs)
    attrs = {"programs": remapped, "sample": p.sample}
    return ctx.emit("select", attrs, [x], path, c.loc, tuple(regions))


def build_upscale(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """repeat with `upscale`: an `upscale` node over 2 (n - drop) copies of the body
    (region i under `<path>.i`, like a repeat's copy i), see ops_select.UPSCALE_OP."""
    from archc.ir.build import _items  # build.py imports this module: import late

    p: RepeatParams = c.params  # type: ignore[assignment]
    up = p.upscale
    assert up is not None
    if not 0 < 2 * up.drop < p.n:
        raise ctx.fail(
            f"repeat upscale drop={up.drop} must satisfy 0 < 2 * drop < n={p.n} (SOLAR keeps "
            "base layers 0..n-drop-1 and drop..n-1, which must overlap)",
            c.loc_of("upscale"),
        )
    t = ctx.graph.type_of(x)
    assert isinstance(t, TensorType)
    regions = []
    for i in range(2 * (p.n - up.drop)):
        prefix = f"{path}.{i}"
        regions.append(
            width_keeping_region(
                ctx,
                t,
                prefix,
                c.loc,
                lambda inner, v, prefix=prefix: _items(inner, c.body, v, prefix),
                "an up-scaled repeat body",
                "depth up-scaling stacks copies of the body, which must keep the width",
            )
        )
    attrs = {"base": p.n, "drop": up.drop, "at_step": up.at_step}
    return ctx.emit("upscale", attrs, [x], path, c.loc, tuple(regions))


def _nested(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: NestedParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    hidden = p.hidden or 4 * d
    depths = p.depths if p.depths is not None else tuple(range(1, p.layers + 1))
    for dep in (*depths, p.eval_depth or p.layers):
        if dep > p.layers:
            where = "eval_depth" if dep == p.eval_depth else "depths"
            raise ctx.fail(f"depth {dep} exceeds the stack's {p.layers} layers", c.loc_of(where))
    for w in p.widths:
        if not 0 < w <= 1:
            raise ctx.fail(f"width fractions must lie in (0, 1], got {w}", c.loc_of("widths"))
    for w in (*p.widths, p.eval_width):
        if round(w * hidden) < 1:
            raise ctx.fail(
                f"width fraction {w} of {hidden} hidden units keeps no unit", c.loc_of("widths")
            )
    return ctx.emit(
        "nested",
        {
            "layers": p.layers,
            "hidden": hidden,
            "act": p.act,
            "widths": tuple(float(w) for w in p.widths),
            "depths": tuple(depths),
            "eval_width": float(p.eval_width),
            "eval_depth": p.eval_depth,
        },
        [x],
        path,
        c.loc,
    )


SELECT_BUILDERS: dict[str, Builder] = {
    "sparse_attention": _sparse_attention,
    "select": _select,
    "nested": _nested,
}
