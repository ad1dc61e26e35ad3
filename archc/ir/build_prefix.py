"""Builders of the prefix-conditioned components: seq2seq (one `seq2seq` node) and
linear_attention (q/k/v projections, a `linear_attention` node, the output projection;
with a prefix also JRT-RNN's separate prefix-key projection)."""

from __future__ import annotations

from archc.frontend.components_prefix import LinearAttentionParams, Seq2SeqParams
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder
from archc.ir.graph import Value


def _seq2seq(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: Seq2SeqParams = c.params  # type: ignore[assignment]
    hidden = p.hidden or ctx.width(x)
    attrs = {"source": p.source, "hidden": hidden, "layers": p.layers, "bias": p.bias}
    return ctx.emit("seq2seq", attrs, [x], path, c.loc)


def _linear_attention(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: LinearAttentionParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    if d % p.heads:
        raise ctx.fail(
            f"linear_attention heads={p.heads} do not divide the width {d}", c.loc_of("heads")
        )
    if p.feature_dim is not None and p.feature_map == "elu":
        # elu + 1 keeps the width; a narrow query/key only makes sense for taylor, whose
        # feature width grows as f^2.
        raise ctx.fail(
            "feature_dim applies to feature_map: taylor only (elu + 1 keeps the head width)",
            c.loc_of("feature_dim"),
        )
    f = p.feature_dim or d // p.heads
    qk = p.heads * f
    q = ctx.emit("linear", {"out": qk, "bias": p.bias}, [x], f"{path}.q", c.loc)
    k = ctx.emit("linear", {"out": qk, "bias": p.bias}, [x], f"{path}.k", c.loc)
    v = ctx.emit("linear", {"out": d, "bias": p.bias}, [x], f"{path}.v", c.loc)
    ins = [q, k, v]
    if p.prefix > 0:
        # JRT-RNN encodes the prefix with its own key projection.
        ins.append(ctx.emit("linear", {"out": qk, "bias": p.bias}, [x], f"{path}.ke", c.loc))
    attrs = {"heads": p.heads, "feature_map": p.feature_map, "prefix": p.prefix, "chunk": p.chunk}
    a = ctx.emit("linear_attention", attrs, ins, f"{path}.attn", c.loc)
    return ctx.emit("linear", {"out": d, "bias": p.bias}, [a], f"{path}.o", c.loc)


PREFIX_BUILDERS: dict[str, Builder] = {
    "seq2seq": _seq2seq,
    "linear_attention": _linear_attention,
}
