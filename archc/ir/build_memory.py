"""Builders of the memory components: `memory` (store mlp -> the `memory` op; matrix ->
a DeltaNet / GLA scan; tokens -> causal attention over the stored tokens) and `titans`
(MAC -> `titans_mac`; MAG and MAL composed from `memory`, attention, norm and gates)."""

from __future__ import annotations

from archc.frontend.components_memory import MemoryParams, TitansParams
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder
from archc.ir.graph import Value

# Fields of `memory` that mean something for one store only.
_MLP_ONLY = ("depth", "mult", "window", "lr")
_DEFAULTS = {"mlp": ("grad", "apply"), "matrix": ("delta", "apply"), "tokens": ("append", "attend")}
_WRITES = {"mlp": ("grad",), "matrix": ("delta", "add"), "tokens": ("append",)}


def _heads(ctx: BuildContext, c: Component, heads: int, d: int) -> None:
    if d % heads:
        raise ctx.fail(f"'{c.kind}' heads={heads} must divide the width {d}", c.loc_of("heads"))


def _attend(
    ctx: BuildContext, c: Component, x: Value, path: str, heads: int, window: int | None
) -> Value:
    """Causal multi-head attention (q, k, v, o projections), optionally windowed."""
    d = ctx.width(x)
    q, k, v = (
        ctx.emit("linear", {"out": d, "bias": False}, [x], f"{path}.{n}", c.loc) for n in "qkv"
    )
    attrs = {"heads": heads, "kv_heads": heads, "mask": "causal", "window": window}
    a = ctx.emit("attention", attrs, [q, k, v], f"{path}.sdpa", c.loc)
    return ctx.emit("linear", {"out": d, "bias": False}, [a], f"{path}.o", c.loc)


def _neural(
    ctx: BuildContext, c: Component, x: Value, path: str, attrs: dict[str, object]
) -> Value:
    return ctx.emit("memory", {"store": "mlp", **attrs}, [x], path, c.loc)


def _memory(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: MemoryParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    _heads(ctx, c, p.heads, d)
    write, read = p.write or _DEFAULTS[p.store][0], p.read or _DEFAULTS[p.store][1]
    if write not in _WRITES[p.store]:
        raise ctx.fail(
            f"a {p.store} store is written by {' or '.join(_WRITES[p.store])}, not '{write}'",
            c.loc_of("write"),
        )
    if read != _DEFAULTS[p.store][1]:
        raise ctx.fail(
            f"a {p.store} store is read by '{_DEFAULTS[p.store][1]}', not '{read}'",
            c.loc_of("read"),
        )
    set_ = p.model_fields_set
    for name in _MLP_ONLY if p.store != "mlp" else ():
        if name in set_:
            raise ctx.fail(f"'{name}' applies to store: mlp only", c.loc_of(name))
    if p.store != "tokens" and "n" in set_:
        raise ctx.fail("'n' applies to store: tokens only", c.loc_of("n"))
    if p.store == "tokens":
        for name in ("chunk", "mode"):
            if name in set_:
                raise ctx.fail(f"'{name}' does not apply to store: tokens", c.loc_of(name))
        return _attend(ctx, c, x, path, p.heads, p.n)
    if p.store == "matrix":
        attrs = {
            "cell": "delta" if write == "delta" else "gla",
            "hidden": d,
            "mode": p.mode,
            "heads": p.heads,
            "chunk": p.chunk,
        }
        return ctx.emit("scan", attrs, [x], path, c.loc)
    attrs = {
        "heads": p.heads,
        "depth": p.depth,
        "mult": float(p.mult),
        "chunk": p.chunk,
        "window": p.window,
        "lr": float(p.lr),
        "mode": p.mode,
    }
    return _neural(ctx, c, x, path, attrs)


def _titans(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: TitansParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    _heads(ctx, c, p.heads, d)
    set_ = p.model_fields_set
    if p.variant == "mac":
        for name in ("window", "omega", "mode"):
            if name in set_:
                raise ctx.fail(
                    f"'{name}' does not apply to variant mac (its attention spans its "
                    "segment of `chunk` tokens; its memory writes one segment per chunk)",
                    c.loc_of(name),
                )
        attrs = {
            "heads": p.heads,
            "depth": p.depth,
            "mult": float(p.mult),
            "chunk": p.chunk,
            "persist": p.persist or 4,
            "lr": float(p.lr),
        }
        return ctx.emit("titans_mac", attrs, [x], path, c.loc)
    if "persist" in set_:
        raise ctx.fail("'persist' applies to variant mac only", c.loc_of("persist"))
    window = p.window or 2 * p.chunk
    mem = {
        "heads": p.heads,
        "depth": p.depth,
        "mult": float(p.mult),
        "chunk": p.chunk,
        "window": p.omega,
        "lr": float(p.lr),
        "mode": p.mode,
    }
    if p.variant == "mal":
        m = _neural(ctx, c, x, f"{path}.memory", mem)
        return _attend(ctx, c, m, f"{path}.attention", p.heads, window)
    # MAG: both branches read x; the memory's (normalised) output gates the attention's.
    a = _attend(ctx, c, x, f"{path}.attention", p.heads, window)
    m = _neural(ctx, c, x, f"{path}.memory", mem)
    norm = {"kind": "rms", "eps": 1e-5, "affine": True}
    a = ctx.emit("norm", norm, [a], f"{path}.norm_a", c.loc)
    m = ctx.emit("norm", norm, [m], f"{path}.norm_m", c.loc)
    g = ctx.emit("pointwise", {"fn": "sigmoid"}, [m], f"{path}.gate", c.loc)
    return ctx.emit("binary", {"fn": "mul"}, [a, g], f"{path}.mul", c.loc)


MEMORY_BUILDERS: dict[str, Builder] = {"memory": _memory, "titans": _titans}
