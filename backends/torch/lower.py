"""Torch lowering rules: one per op, as source text.

A rule gives (a) the Python expression that constructs the node's module, if it owns
one, and (b) the expression that computes its outputs from input variable names. The
same text builds the in-memory module (compiled with `exec`, as torch.fx does) and the
standalone model.py, so the two cannot drift apart. Values in the text come only from
validated IR attributes, written with `repr`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.types import TensorType, Type

Ctor = Callable[[Node, list[Type]], str | None]
Call = Callable[[Node, list[str], str], str]


@dataclass(frozen=True)
class Rule:
    """How one op lowers: module constructor text, call text, helper definitions used."""

    ctor: Ctor
    call: Call
    deps: tuple[object, ...] = ()


def _width(t: Type) -> int:
    assert isinstance(t, TensorType)
    return t.feature


def _no_module(node: Node, ins: list[Type]) -> None:
    return None


def _linear_ctor(node: Node, ins: list[Type]) -> str | None:
    a = node.attrs
    if a["weight_from"] is not None:
        return None if not a["bias"] else f"L.Bias({a['out']!r})"
    return f"nn.Linear({_width(ins[0])!r}, {a['out']!r}, bias={a['bias']!r})"


def _linear_call(node: Node, args: list[str], mod: str) -> str:
    src = node.attrs["weight_from"]
    if src is None:
        return f"{mod}({args[0]})"
    weight = f"m.{ident(src)}.weight"
    bias = f"{mod}.bias" if node.attrs["bias"] else "None"
    return f"F.linear({args[0]}, {weight}, {bias})"


def _norm_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    if a["kind"] == "rms":
        return f"nn.RMSNorm({d!r}, eps={a['eps']!r}, elementwise_affine={a['affine']!r})"
    return f"nn.LayerNorm({d!r}, eps={a['eps']!r}, elementwise_affine={a['affine']!r})"


_POINTWISE = {
    "gelu": "F.gelu({x})",
    "gelu_tanh": "F.gelu({x}, approximate='tanh')",
    "relu": "F.relu({x})",
    "silu": "F.silu({x})",
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "identity": "{x}",
}
_BINARY = {"add": "{a} + {b}", "mul": "{a} * {b}", "sub": "{a} - {b}"}


def _conv_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    groups = d if a["groups"] == 0 else a["groups"]
    return (
        f"L.CausalConv1d({d!r}, {a['out']!r}, {a['kernel']!r}, dilation={a['dilation']!r}, "
        f"groups={groups!r}, causal={a['causal']!r}, bias={a['bias']!r})"
    )


def _posenc_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    if a["kind"] == "learned":
        return f"L.LearnedPositions({a['max_len']!r}, {d!r})"
    if a["kind"] == "sinusoidal":
        return f"L.SinusoidalPositions({a['max_len']!r}, {d!r})"
    return f"L.Rotary({a['heads']!r}, {d // a['heads']!r}, base={a['base']!r})"


def _attention_call(node: Node, args: list[str], mod: str) -> str:
    a = node.attrs
    return (
        f"L.attention({args[0]}, {args[1]}, {args[2]}, {a['heads']!r}, {a['kv_heads']!r}, "
        f"{a['mask'] == 'causal'!r}, {a['window']!r}, {a['dropout']!r}, self.training)"
    )


_RNN_CLASS = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn_tanh": "nn.RNN", "rnn_relu": "nn.RNN"}


def _scan_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    extra = ""
    if a["cell"].startswith("rnn_"):
        extra = f", nonlinearity={a['cell'][4:]!r}"
    return (
        f"{_RNN_CLASS[a['cell']]}({_width(ins[0])!r}, {a['hidden']!r}, "
        f"num_layers={a['layers']!r}, bias={a['bias']!r}, batch_first=True, "
        f"bidirectional={a['bidirectional']!r}{extra})"
    )


def _scan_call(node: Node, args: list[str], mod: str) -> str:
    # nn.LSTM/GRU/RNN: the fused ATen sequential kernels, exact oracles of themselves.
    return f"{mod}({args[0]}, None if state is None else state.get({node.path!r}))"


RULES: dict[str, Rule] = {
    "embed": Rule(
        lambda n, i: f"nn.Embedding({n.attrs['vocab']!r}, {n.attrs['dim']!r})",
        lambda n, a, m: f"{m}({a[0]})",
    ),
    "linear": Rule(_linear_ctor, _linear_call, (L.Bias,)),
    "norm": Rule(_norm_ctor, lambda n, a, m: f"{m}({a[0]})"),
    "pointwise": Rule(_no_module, lambda n, a, m: _POINTWISE[n.attrs["fn"]].format(x=a[0])),
    "binary": Rule(_no_module, lambda n, a, m: _BINARY[n.attrs["fn"]].format(a=a[0], b=a[1])),
    "split": Rule(
        _no_module, lambda n, a, m: f"torch.split({a[0]}, {list(n.attrs['sizes'])!r}, dim=-1)"
    ),
    "dropout": Rule(
        _no_module, lambda n, a, m: f"F.dropout({a[0]}, {n.attrs['p']!r}, self.training)"
    ),
    "conv1d": Rule(_conv_ctor, lambda n, a, m: f"{m}({a[0]})", (L.CausalConv1d,)),
    "posenc": Rule(
        _posenc_ctor,
        lambda n, a, m: f"{m}({a[0]})",
        (L.LearnedPositions, L.SinusoidalPositions, L.Rotary),
    ),
    "attention": Rule(_no_module, _attention_call, (L.attention,)),
    "scan": Rule(_scan_ctor, _scan_call),
}


def ident(path: str) -> str:
    """The attribute name a module at `path` gets in the generated code's namespace."""
    return "".join(ch if ch.isalnum() else "_" for ch in path)


def get_rule(op: str) -> Rule:
    rule = RULES.get(op)
    if rule is None:
        raise NotImplementedError(f"the torch backend has no rule for op '{op}'")
    return rule
