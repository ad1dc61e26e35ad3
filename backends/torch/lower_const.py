"""Torch lowering rules of the const / scale / reshape / rearrange ops (ops_const.py);
lower.py merges CONST_RULES into its rule table. Plain tensor expressions: the emitted
standalone model.py needs no helper for them."""

from __future__ import annotations

from archc.backends.torch.lower import Rule, _no_module
from archc.ir.graph import Node


def _reshape(n: Node, a: list[str], m: str) -> str:
    shape = ", ".join(repr(s) for s in n.attrs["shape"])
    return f"{a[0]}.reshape(*{a[0]}.shape[:2], {shape})"


def _rearrange(n: Node, a: list[str], m: str) -> str:
    axes = ", ".join(repr(p + 2) for p in n.attrs["perm"])
    return f"{a[0]}.permute(0, 1, {axes})"


CONST_RULES: dict[str, Rule] = {
    "const": Rule(
        _no_module,
        lambda n, a, m: f"torch.full_like({a[0]}, {float(n.attrs['value'])!r})",
        per_token=True,
    ),
    "scale": Rule(
        _no_module, lambda n, a, m: f"{a[0]} * {float(n.attrs['factor'])!r}", per_token=True
    ),
    "reshape": Rule(_no_module, _reshape, per_token=True),
    "rearrange": Rule(_no_module, _rearrange, per_token=True),
}
