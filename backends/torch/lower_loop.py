"""Torch lowering of the `halt` op (adaptive depth): its module; codegen.py `halt` and
`loop` generate the calls (their regions run once per step, with per-step state keys)."""

from __future__ import annotations

from archc.backends.torch.lower import Rule
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import TensorType, Type


def _halt_ctor(node: Node, ins: list[Type]) -> str:
    a, t = node.attrs, ins[0]
    assert isinstance(t, TensorType)
    return (
        f"L.Halt({t.feature!r}, {a['max_steps']!r}, {a['criterion']!r}, {a['explore']!r}, "
        f"{a['threshold']!r}, {a['min_steps']!r}, {a['per']!r}, {a['target']!r}, "
        f"{a['supervise']!r}, {a['inject']!r})"
    )


def _halt_blocker(node: Node) -> str | None:
    if node.attrs["per"] == "token":
        return None  # causal prefix pooling: continued chunk by chunk (codegen.py `halt`)
    return (
        f"{node.path}: halt per sample decides the depth from the whole sequence, so it "
        "cannot continue a sequence chunk by chunk"
    )


HALT_RULES: dict[str, Rule] = {
    "halt": Rule(
        _halt_ctor,
        lambda n, a, m: f"{m}({a[0]})",
        (L.Halt,),
        # `step` marks the op as incremental: codegen.py `halt` writes its state entry.
        step=lambda n, a, m, o, k: None,
        blocker=_halt_blocker,
    ),
}
