"""Torch lowering rules of the `select` ops (ops_select.py): block_attention (top-k block
retrieval + block-sparse attention), select (layer-path programs) and nested (SortedNet).
lower.py merges SELECT_RULES into its rule table."""

from __future__ import annotations

from collections.abc import Callable

from archc.backends.torch.lower import Rule, _width
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import Type


def _sparse_args(node: Node) -> str:
    a = node.attrs
    args = f"{a['heads']!r}, {a['kv_heads']!r}, {a['block']!r}, {a['topk']!r}, {a['window']!r}"
    if a["fanout"] is not None:
        args += f", fanout={a['fanout']!r}, super_topk={a['super_topk']!r}"
    return args


def _sparse_call(node: Node, args: list[str], mod: str) -> str:
    return f"L.block_sparse_attention({args[0]}, {args[1]}, {args[2]}, {_sparse_args(node)})"


def _sparse_step(
    node: Node, args: list[str], mod: str, outs: list[str], key: str
) -> list[str] | None:
    return [
        f"{outs[0]}, new_state[{key}] = L.block_sparse_attention_step({args[0]}, {args[1]}, "
        f"{args[2]}, state.get({key}), {_sparse_args(node)})"
    ]


def _select_uses(node: Node) -> tuple[int, ...]:
    """How often the programs (all of them) apply each region."""
    runs = [c for prog in node.attrs["programs"] for c in prog]
    return tuple(max(1, runs.count(c)) for c in range(len(node.regions)))


def _select_regions(
    node: Node, args: list[str], mod: str, outs: list[str], run: Callable[..., str]
) -> list[str]:
    # Each pool layer is one region function; calling it again reuses its modules, so
    # a repeated layer shares its weights. Its k-th application (counted over every
    # program) keeps state entries of its own, so repeated layers stream too.
    o, programs = outs[0], node.attrs["programs"]
    seen: dict[int, int] = {}

    def apply(c: int, x: str) -> str:
        k = seen.get(c, 0)
        seen[c] = k + 1
        return run(c, x, k)

    if len(programs) == 1:
        return [f"{o} = {args[0]}", *(f"{o} = {apply(c, o)}" for c in programs[0])]
    # Per-sample programs: each program runs on the sub-batch of the samples that chose
    # it (cost: the batch's share of each program). Incremental and right-padded runs
    # keep whole-batch rows (state entries and `lengths` are per batch row): there each
    # chosen program runs on the whole batch and each sample keeps its own rows.
    x = args[0]
    lines = [
        f"{o}_ch = {mod}({x})",
        f"{o}_sub = not inc and lengths is None",
        f"{o} = torch.zeros_like({x}) if {o}_sub else None",
    ]
    for p, prog in enumerate(programs):
        lines += [
            f"{o}_sel = {o}_ch == {p}",
            f"if bool({o}_sel.any()):",
            f"    {o}_h = {x}[{o}_sel] if {o}_sub else {x}",
            *(f"    {o}_h = {apply(c, f'{o}_h')}" for c in prog),
            f"    if {o}_sub:",
            f"        {o}[{o}_sel] = {o}_h",
            "    else:",
            f"        {o} = {o}_h if {o} is None else "
            f"torch.where({o}_sel[:, None, None], {o}_h, {o})",
        ]
    return lines


def _select_ctor(node: Node, ins: list[Type]) -> str | None:
    n = len(node.attrs["programs"])
    return None if n == 1 else f"L.PathChoice({n!r}, {node.attrs['sample']!r})"


def _upscale_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return f"L.DepthUpscale({a['base']!r}, {a['drop']!r}, {a['at_step']!r})"


def _upscale_regions(
    node: Node, args: list[str], mod: str, outs: list[str], run: Callable[..., str]
) -> list[str]:
    # The module says which blocks run (the base path, or all after the up-scale); each
    # block is a region function, applied in that order.
    o = outs[0]
    fns = ", ".join(f"lambda x: {run(c, 'x')}" for c in range(len(node.regions)))
    return [
        f"{o} = {args[0]}",
        f"{o}_blocks = ({fns},)",
        f"for {o}_c in {mod}():",
        f"    {o} = {o}_blocks[{o}_c]({o})",
    ]


def _nested_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.NestedMLP({_width(ins[0])!r}, {a['hidden']!r}, {a['layers']!r}, {a['act']!r}, "
        f"{a['widths']!r}, {a['depths']!r}, eval_width={a['eval_width']!r}, "
        f"eval_depth={a['eval_depth']!r})"
    )


SELECT_RULES: dict[str, Rule] = {
    "block_attention": Rule(
        lambda n, i: None,
        _sparse_call,
        (
            L.split_heads,
            L.repeat_kv,
            L._sparse_attention_keys,
            L._sparse_attention_gather,
            L._super_allowed,
            L.block_sparse_attention,
            L.block_sparse_attention_step,
        ),
        step=_sparse_step,
        grows=lambda n: True,
    ),
    "select": Rule(
        _select_ctor,
        lambda n, a, m: "",  # unused: `regions` writes the statements
        (L.PathChoice,),
        regions=_select_regions,
        region_uses=_select_uses,
        per_token=True,  # carries nothing itself: its regions' nodes stream on their own
    ),
    "upscale": Rule(
        _upscale_ctor,
        lambda n, a, m: "",  # unused: `regions` writes the statements
        (L.DepthUpscale,),
        regions=_upscale_regions,
        per_token=True,  # carries nothing itself: its regions' nodes stream on their own
    ),
    # In training each forward samples a sub-network; eval (and streaming) runs a fixed
    # one, token by token.
    "nested": Rule(_nested_ctor, lambda n, a, m: f"{m}({a[0]})", (L.NestedMLP,), per_token=True),
}
