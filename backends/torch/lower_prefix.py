"""Torch lowering rules of the prefix-conditioned ops (ops_prefix.py): seq2seq and
linear_attention. lower.py merges PREFIX_RULES into its rule table."""

from __future__ import annotations

from archc.backends.torch.lower import Rule, _width
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import Type


def _seq2seq_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.Seq2SeqLSTM({_width(ins[0])!r}, {a['hidden']!r}, {a['layers']!r}, "
        f"{a['source']!r}, bias={a['bias']!r})"
    )


def _seq2seq_step(node: Node, args: list[str], mod: str, outs: list[str], key: str) -> list[str]:
    # (h, c) and the chunk's offset say which LSTM runs each token.
    return [f"{outs[0]}, new_state[{key}] = {mod}({args[0]}, state.get({key}), pos, lengths)"]


def _la_args(node: Node, args: list[str]) -> str:
    a = node.attrs
    ke = args[3] if a["prefix"] > 0 else "None"
    return (
        f"{args[0]}, {args[1]}, {args[2]}, {ke}, {a['heads']!r}, {a['feature_map']!r}, "
        f"{a['prefix']!r}, {a['chunk']!r}"
    )


def _la_call(node: Node, args: list[str], mod: str) -> str:
    return f"L.prefix_linear_attention({_la_args(node, args)})[0]"


def _la_step(node: Node, args: list[str], mod: str, outs: list[str], key: str) -> list[str]:
    return [
        f"{outs[0]}, new_state[{key}] = L.prefix_linear_attention({_la_args(node, args)}, "
        f"state=state.get({key}))"
    ]


def _la_blocker(node: Node) -> str | None:
    if node.attrs["prefix"] == 0:
        return None
    return f"{node.path}: linear_attention reads its whole {node.attrs['prefix']}-token prefix"


_LSTM_DEPS = (
    L.KernelHook,
    L.fused_rnn,
    L.fused_rnn_layers,
    L._fused_rnn_refusal,
    L.FusedLSTM,
)

PREFIX_RULES: dict[str, Rule] = {
    "seq2seq": Rule(
        _seq2seq_ctor,
        lambda n, a, m: f"{m}({a[0]}, None, 0, lengths)[0]",
        (*_LSTM_DEPS, L.Seq2SeqLSTM),
        step=_seq2seq_step,
    ),
    "linear_attention": Rule(
        lambda n, i: None,
        _la_call,
        (L.feature_map, L.prefix_linear_attention),
        step=_la_step,
        blocker=_la_blocker,
    ),
}
