"""Spec -> Graph: each spec component becomes primitive IR ops with hierarchical paths.

Paths: a layer at index i of a list under P is `P.i.<name>` where <name> is the
component (or define) name, so parameters read `layers.3.attention.q.weight`. A loop's
body copy c lives under `<loop>.<c>`; a repeat's copy c under `<repeat>.<c>`.
Shape errors are reported at the spec location of the layer that caused them.
"""

from __future__ import annotations

from archc import knobs
from archc.diagnostics import Collector, SourceLoc
from archc.frontend.components import (
    AttentionParams,
    Conv1dParams,
    GateParams,
    MlpParams,
)
from archc.frontend.schema import Component, Layer, Ref, Spec
from archc.ir.build_ctx import (
    BudgetExhausted,
    BuildAbort,
    BuildContext,
    Builder,
    width_keeping_region,
)
from archc.ir.build_hier import HIER_BUILDERS
from archc.ir.build_loop import LOOP_BUILDERS, check_readouts
from archc.ir.build_memory import MEMORY_BUILDERS
from archc.ir.build_prefix import PREFIX_BUILDERS
from archc.ir.build_scan import RECURRENT_BUILDERS
from archc.ir.build_segment import SEGMENT_BUILDERS
from archc.ir.build_select import SELECT_BUILDERS, build_upscale
from archc.ir.graph import Graph, Value
from archc.ir.ops import ShapeError, get_op
from archc.ir.types import TensorType


def _items(ctx: BuildContext, layers: tuple[Layer, ...], x: Value, prefix: str) -> Value:
    for i, layer in enumerate(layers):
        name = layer.name if isinstance(layer, Ref) else layer.kind
        try:
            x = _layer(ctx, layer, x, f"{prefix}.{i}.{name}")
        except BudgetExhausted:
            raise  # every later layer would fail the same way, possibly 1e10 times
        except BuildAbort:
            # Keep going with the layer's input so later, independent errors are
            # reported in the same run; the collector already holds this one.
            ctx.failed = True
    return x


def _layer(ctx: BuildContext, layer: Layer, x: Value, path: str) -> Value:
    if isinstance(layer, Ref):
        if layer.name in ctx.define_stack:  # reported by the schema; guard anyway
            raise ctx.fail(f"recursive define '{layer.name}'", layer.loc)
        body = ctx.spec.define[layer.name]
        saved = ctx.define_stack
        ctx.define_stack = (*saved, layer.name)
        try:
            return _items(ctx, body, x, path)
        finally:
            ctx.define_stack = saved
    if layer.kind != "embed":
        try:
            ctx.width(x)
        except ShapeError as exc:
            raise ctx.fail(f"'{layer.kind}': {exc}", layer.loc) from exc
    return BUILDERS[layer.kind](ctx, layer, x, path)


# -- component builders ------------------------------------------------------------------------


def _embed(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    vocab = ctx.spec.vocab
    if vocab is None:
        # Report it, then keep building with a stand-in so later layers are checked
        # against the right (B, T, D) input instead of cascading errors.
        ctx.diags.error("'embed' needs 'vocab' set at the top of the spec", c.loc)
        vocab = 1
    dim = c.params.dim or ctx.spec.d_model  # type: ignore[attr-defined]
    out = ctx.emit("embed", {"vocab": vocab, "dim": dim}, [x], path, c.loc)
    ctx.embeds.append((path, dim))
    return out


def _posenc(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p = c.params
    return ctx.emit("posenc", {"kind": p.kind, "max_len": p.max_len}, [x], path, c.loc)  # type: ignore[attr-defined]


def _linear(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p = c.params
    out = p.out or ctx.width(x)  # type: ignore[attr-defined]
    return ctx.emit("linear", {"out": out, "bias": p.bias}, [x], path, c.loc)  # type: ignore[attr-defined]


def _norm(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p = c.params
    return ctx.emit(
        "norm",
        {"kind": p.kind, "eps": float(p.eps), "affine": p.affine},  # type: ignore[attr-defined]
        [x],
        path,
        c.loc,
    )


def _act(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    return ctx.emit("pointwise", {"fn": c.params.fn}, [x], path, c.loc)  # type: ignore[attr-defined]


def _dropout(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    return ctx.emit("dropout", {"p": float(c.params.p)}, [x], path, c.loc)  # type: ignore[attr-defined]


def _residual(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    y = _items(ctx, c.body, x, path)
    if ctx.width(y) != ctx.width(x):
        raise ctx.fail(
            f"residual body changes the width from {ctx.width(x)} to "
            f"{ctx.width(y)}; a residual needs its body to keep the width",
            c.loc,
        )
    return ctx.emit("binary", {"fn": "add"}, [x, y], f"{path}.add", c.loc)


def _seq(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    return _items(ctx, c.body, x, path)


_GATED = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}


def _mlp(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: MlpParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    hidden = p.hidden or max(1, round(p.mult * d))
    if p.act in _GATED:
        gate = ctx.emit("linear", {"out": hidden, "bias": p.bias}, [x], f"{path}.gate", c.loc)
        up = ctx.emit("linear", {"out": hidden, "bias": p.bias}, [x], f"{path}.up", c.loc)
        g = ctx.emit("pointwise", {"fn": _GATED[p.act]}, [gate], f"{path}.act", c.loc)
        h = ctx.emit("binary", {"fn": "mul"}, [g, up], f"{path}.mul", c.loc)
    else:
        up = ctx.emit("linear", {"out": hidden, "bias": p.bias}, [x], f"{path}.up", c.loc)
        h = ctx.emit("pointwise", {"fn": p.act}, [up], f"{path}.act", c.loc)
    if p.dropout > 0:
        h = ctx.emit("dropout", {"p": float(p.dropout)}, [h], f"{path}.dropout", c.loc)
    return ctx.emit("linear", {"out": d, "bias": p.bias}, [h], f"{path}.down", c.loc)


def _gate(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """act(W_u x) * body(W_v x): (B, T, D) -> (B, T, hidden)."""
    p: GateParams = c.params  # type: ignore[assignment]
    hidden = p.hidden or ctx.width(x)
    u = ctx.emit("linear", {"out": hidden, "bias": p.bias}, [x], f"{path}.u", c.loc)
    v = ctx.emit("linear", {"out": hidden, "bias": p.bias}, [x], f"{path}.v", c.loc)
    if p.act != "identity":
        u = ctx.emit("pointwise", {"fn": p.act}, [u], f"{path}.act", c.loc)
    y = _items(ctx, c.body, v, path)
    if ctx.width(y) != hidden:
        raise ctx.fail(
            f"gate body changes the width from {hidden} to {ctx.width(y)}; the gated "
            "branch must keep the gate's width",
            c.loc,
        )
    return ctx.emit("binary", {"fn": "mul"}, [u, y], f"{path}.mul", c.loc)


def _conv1d(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: Conv1dParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    groups = 0 if p.groups == "depthwise" else p.groups
    out = p.out or d
    if groups == 0 and out % d:
        raise ctx.fail(
            f"a depthwise conv1d needs out ({out}) to be a multiple of the input width {d}", c.loc
        )
    return ctx.emit(
        "conv1d",
        {
            "out": out,
            "kernel": p.kernel,
            "dilation": p.dilation,
            "groups": groups,
            "causal": p.causal,
            "bias": p.bias,
        },
        [x],
        path,
        c.loc,
    )


def _attention(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: AttentionParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    kvh = p.kv_heads or p.heads
    if d % p.heads:
        raise ctx.fail(f"attention heads={p.heads} do not divide the width {d}", c.loc_of("heads"))
    if p.heads % kvh:
        raise ctx.fail(
            f"attention kv_heads={kvh} must divide heads={p.heads}", c.loc_of("kv_heads")
        )
    if p.chunk is not None and p.window is not None:
        raise ctx.fail(
            "attention takes 'window' or 'chunk', not both (a chunk already bounds the keys)",
            c.loc_of("chunk"),
        )
    if p.rank is not None and p.rank >= d:
        raise ctx.fail(
            f"attention rank={p.rank} is not low-rank for the width {d} (needs rank < {d})",
            c.loc_of("rank"),
        )
    hd = d // p.heads
    if p.rank is None:
        q = ctx.emit("linear", {"out": d, "bias": p.bias}, [x], f"{path}.q", c.loc)
        k = ctx.emit("linear", {"out": kvh * hd, "bias": p.bias}, [x], f"{path}.k", c.loc)
    else:
        # Low rank: q = W_qb (W_qa x), W_qa (rank, D) shared by all heads, W_qb (D, rank);
        # k likewise; the score matrix q k^T of each head then has rank <= rank.
        qa = ctx.emit("linear", {"out": p.rank, "bias": False}, [x], f"{path}.q_a", c.loc)
        q = ctx.emit("linear", {"out": d, "bias": p.bias}, [qa], f"{path}.q_b", c.loc)
        ka = ctx.emit("linear", {"out": p.rank, "bias": False}, [x], f"{path}.k_a", c.loc)
        k = ctx.emit("linear", {"out": kvh * hd, "bias": p.bias}, [ka], f"{path}.k_b", c.loc)
    v = ctx.emit("linear", {"out": kvh * hd, "bias": p.bias}, [x], f"{path}.v", c.loc)
    if p.pos == "rope":
        q = ctx.emit(
            "posenc",
            {"kind": "rope", "heads": p.heads, "base": float(p.rope_base)},
            [q],
            f"{path}.rope_q",
            c.loc,
        )
        k = ctx.emit(
            "posenc",
            {"kind": "rope", "heads": kvh, "base": float(p.rope_base)},
            [k],
            f"{path}.rope_k",
            c.loc,
        )
    a = ctx.emit(
        "attention",
        {
            "heads": p.heads,
            "kv_heads": kvh,
            "mask": p.mask,
            "window": p.window,
            "chunk": p.chunk,
            "dropout": float(p.dropout),
        },
        [q, k, v],
        f"{path}.sdpa",
        c.loc,
    )
    return ctx.emit("linear", {"out": d, "bias": p.bias}, [a], f"{path}.o", c.loc)


def _head(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    out = c.params.out or ctx.spec.vocab  # type: ignore[attr-defined]
    if out is None:
        raise (
            ctx.fail("'head' needs 'vocab' set at the top of the spec (or head out=N)", c.loc)
            if not any(True for _ in ctx.embeds)
            else BuildAbort()
        )
    weight_from = None
    if c.params.tied:  # type: ignore[attr-defined]
        if not ctx.embeds:
            raise ctx.fail("a tied head needs an 'embed' layer before it", c.loc)
        weight_from, dim = ctx.embeds[0]
        if dim != ctx.width(x):
            raise ctx.fail(
                f"a tied head needs width {dim} (the embedding's), got {ctx.width(x)}", c.loc
            )
        if out != ctx.spec.vocab:
            raise ctx.fail(
                f"a tied head outputs the vocabulary ({ctx.spec.vocab}), not out={out}",
                c.loc_of("out"),
            )
    return ctx.emit(
        "linear",
        {
            "out": out,
            "bias": c.params.bias,  # type: ignore[attr-defined]
            "weight_from": weight_from,
        },
        [x],
        path,
        c.loc,
    )


def _region(
    ctx: BuildContext, body: tuple[Layer, ...], x: Value, prefix: str, loc: SourceLoc | None
) -> Graph:
    """Build a loop `body` as a region graph whose input has the type of `x`."""
    t = ctx.graph.type_of(x)
    assert isinstance(t, TensorType)
    return width_keeping_region(
        ctx,
        t,
        prefix,
        loc,
        lambda inner, v: _items(inner, body, v, prefix),
        "loop body",
        "a loop needs its body to keep the width",
    )


def _check_unroll(ctx: BuildContext, c: Component, count: int, param: str) -> None:
    if count > knobs.max_ir_nodes():
        raise ctx.fail(
            f"{c.kind} {param}={count} unrolls into more than {knobs.max_ir_nodes()} IR nodes",
            c.loc_of(param),
        )


def _repeat(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    n = c.params.n  # type: ignore[attr-defined]
    if c.params.upscale is not None:  # type: ignore[attr-defined]
        return build_upscale(ctx, c, x, path)
    _check_unroll(ctx, c, n, "n")
    # Refuse up front what is certain to blow the budget (a nested 1e5 x 1e5
    # repeat) instead of building 200k nodes before noticing.
    at_least = n * _min_nodes(ctx.spec, c.body)
    if at_least > knobs.max_ir_nodes():
        raise ctx.fail(
            f"repeat n={n} unrolls into at least {at_least} IR nodes, more than "
            f"{knobs.max_ir_nodes()}",
            c.loc_of("n"),
        )
    for i in range(n):
        x = _items(ctx, c.body, x, f"{path}.{i}")
    return x


def _min_nodes(spec: Spec, layers: tuple[Layer, ...], depth: int = 0) -> int:
    """A lower bound on the IR nodes a body of layers unrolls into."""
    if depth > 64:  # recursive defines are reported by the schema
        return 0
    total = 0
    for layer in layers:
        if isinstance(layer, Ref):
            total += _min_nodes(spec, spec.define.get(layer.name, ()), depth + 1)
        elif layer.kind == "repeat":
            total += layer.params.n * _min_nodes(spec, layer.body, depth + 1)  # type: ignore[attr-defined]
        elif layer.kind == "loop":
            copies = layer.params.copies()  # type: ignore[attr-defined]
            total += 1 + copies * _min_nodes(spec, layer.body, depth + 1)
        else:
            total += max(1, _min_nodes(spec, layer.body, depth + 1))
    return total


BUILDERS: dict[str, Builder] = {
    "embed": _embed,
    "posenc": _posenc,
    "linear": _linear,
    "norm": _norm,
    "act": _act,
    "dropout": _dropout,
    "residual": _residual,
    "seq": _seq,
    "mlp": _mlp,
    "conv1d": _conv1d,
    "gate": _gate,
    "attention": _attention,
    "head": _head,
    **RECURRENT_BUILDERS,
    **SELECT_BUILDERS,
    **LOOP_BUILDERS,  # loop, halt: archc/ir/build_loop.py
    **SEGMENT_BUILDERS,  # segment: archc/ir/build_segment.py
    **HIER_BUILDERS,  # hier: archc/ir/build_hier.py
    **MEMORY_BUILDERS,  # memory, titans: archc/ir/build_memory.py
    **PREFIX_BUILDERS,  # seq2seq, linear_attention: archc/ir/build_prefix.py
    "repeat": _repeat,
}


def register_builder(kind: str, builder: Builder) -> None:
    """Lower a user-registered component (see components.register_component)."""
    BUILDERS[kind] = builder


def build_graph(spec: Spec) -> Graph:
    """The IR graph of a spec; raises DiagnosticError (at spec locations) on shape errors."""
    diags = Collector()
    graph = Graph(spec.model)
    first = spec.layers[0] if spec.layers else None
    tokens = (isinstance(first, Component) and first.kind == "embed") or (
        isinstance(first, Ref) and _starts_with_embed(spec, first.name)
    )
    attrs = {"kind": "tokens"} if tokens else {"kind": "features", "dim": spec.d_model}
    inp = graph.add(
        "input",
        get_op("input").with_defaults(attrs),
        [],
        get_op("input").shape(get_op("input").with_defaults(attrs), []),
        loc=spec.loc,
        path="input",
    )
    graph.inputs.append(inp.id)
    ctx = BuildContext(spec, diags, graph)
    try:
        y = _items(ctx, spec.layers, inp.out(), "layers")
        graph.outputs.append(y)
    except BuildAbort:
        pass
    if not spec.layers:
        diags.error("the spec has no layers", spec.loc)
    if not diags.diagnostics:
        check_readouts(graph, diags)
    diags.raise_if_any()
    return graph


def _starts_with_embed(spec: Spec, name: str, depth: int = 0) -> bool:
    body = spec.define.get(name, ())
    if not body or depth > 32:
        return False
    first = body[0]
    if isinstance(first, Ref):
        return _starts_with_embed(spec, first.name, depth + 1)
    return first.kind == "embed"
