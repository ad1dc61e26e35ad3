"""Torch lowering rule of the `hier` op (ops_hier.py); lower.py merges HIER_RULES into
its rule table."""

from __future__ import annotations

from collections.abc import Callable

from archc.backends.torch.lower import Rule, _width, get_rule
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import Type


def _hier_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.Hier({_width(ins[0])!r}, {a['down']!r}, stride={a['stride']!r}, pool={a['pool']!r}, "
        f"target={a['target']!r}, weight={a['weight']!r}, up={a['up']!r}, "
        f"causal={a['causal']!r}, inner_dim={a['dim']!r}, heads={a['heads']!r})"
    )


def _hier_blocker(node: Node) -> str | None:
    a = node.attrs
    if not a["causal"]:
        return f"{node.path}: hier with causal=false reads the rest of its group"
    if a["down"] == "stride" and a["up"] == "cross-attn":
        return f"{node.path}: hier stride with up=cross-attn does not continue a sequence yet"
    return None


def _hier_grows(node: Node) -> bool:
    """Whether the entry grows with every token: a chunked hier keeps its chunks; an
    inner node's state may grow (a KV cache of the coarse steps)."""
    if node.attrs["down"] != "stride":
        return True
    # walk() reaches inside loops; a loop itself is generated code with no rule.
    inner = (n for r in node.regions for n in r.walk() if n.op not in ("input", "loop"))
    return any(get_rule(n.op).grows(n) for n in inner)


def _hier_regions(
    node: Node, args: list[str], mod: str, outs: list[str], run: Callable[[int, str], str]
) -> list[str]:
    # The module calls the inner network on the coarse batch with its own lengths (the
    # lambda's parameters shadow the model's). Continuing a sequence (causal hiers), a
    # stride hier also passes its coarse offset and private state dicts (kept in its
    # entry); a chunked one reruns the inner network over the chunks in its entry.
    body = run(0, "h_")
    inner = f"lambda h_, lengths, inc=False, pos=0, state=None, new_state=None: {body}"
    tokens = f", tokens={args[1]}" if len(args) > 1 else ""
    plain = f"{outs[0]} = {mod}({args[0]}, {inner}, lengths{tokens})"
    if _hier_blocker(node) is not None:
        return [plain]
    key = repr(node.path) + (" + sfx" if "sfx + '/0'" in body else "")
    return [
        "if inc:",
        f"    {outs[0]}, new_state[{key}] = {mod}.step({args[0]}, {inner}, state.get({key})"
        f"{tokens})",
        "else:",
        f"    {plain}",
    ]


HIER_RULES: dict[str, Rule] = {
    "hier": Rule(
        _hier_ctor,
        lambda n, a, m: "",
        (
            L.select_padded,
            L.chunk_of,
            L.boundary_probs,
            L.ema_smooth,
            L.split_starts,
            L.Hier,
        ),
        # `step` only marks the op as carrying its own state entry; _hier_regions writes
        # the incremental form.
        step=lambda n, a, m, o, k: None,
        blocker=_hier_blocker,
        grows=_hier_grows,
        regions=_hier_regions,
    ),
}
