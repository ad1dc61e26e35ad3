"""Torch lowering of the neural-memory ops (`memory`, `titans_mac`) to the modules of
backends/torch/modules/memory.py."""

from __future__ import annotations

from archc.backends.torch.lower import Rule
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import TensorType, Type

_DEPS = (
    L._silu_grad,
    L.memory_apply,
    L._decay_matrix,
    L.memory_chunk,
    L.window_band,
    L.memory_scan,
    L.NeuralMemory,
)


def _width(ins: list[Type]) -> int:
    t = ins[0]
    assert isinstance(t, TensorType)
    return t.feature


def _memory_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.NeuralMemory({_width(ins)!r}, {a['heads']!r}, depth={a['depth']!r}, "
        f"mult={a['mult']!r}, chunk={a['chunk']!r}, window={a['window']!r}, lr={a['lr']!r}, "
        f"mode={a['mode']!r})"
    )


def _mac_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.TitansMAC({_width(ins)!r}, {a['heads']!r}, depth={a['depth']!r}, "
        f"mult={a['mult']!r}, chunk={a['chunk']!r}, persist={a['persist']!r}, lr={a['lr']!r})"
    )


def _step(node: Node, args: list[str], mod: str, outs: list[str], key: str) -> list[str]:
    # State: the memory at the last chunk boundary plus the unfinished chunk's inputs
    # (fewer than `chunk` tokens), which each call re-runs: exact, and constant in size.
    return [f"{outs[0]}, new_state[{key}] = {mod}.step({args[0]}, state.get({key}))"]


def _call(node: Node, args: list[str], mod: str) -> str:
    return f"{mod}({args[0]})"


MEMORY_RULES: dict[str, Rule] = {
    "memory": Rule(_memory_ctor, _call, _DEPS, step=_step),
    "titans_mac": Rule(_mac_ctor, _call, (*_DEPS, L.TitansMAC), step=_step),
}
