"""The machinery of the op table: OpDef, attribute schemas, costs, the registry, and
the shape helpers every op's rules share. The ops themselves are in ops.py (and
ops_scan.py for recurrences).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from archc.ir.types import Attrs, ParamSpec, TensorType, Type

REQUIRED = object()
F32 = 4  # bytes per float32 element


class ShapeError(ValueError):
    """An op's inputs or attributes do not fit; the message is for the spec's author."""


@dataclass(frozen=True)
class AttrSpec:
    types: tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Cost:
    """Per-token FLOPs and memory figures of one node at sequence length T.

    `flops` counts matmul-class work only (products and convolutions, 2 m n k), the
    class torch.utils.flop_counter counts; `ew_flops` the elementwise rest. Backward
    defaults to twice the forward products (gradients w.r.t. inputs and weights).
    """

    flops: float = 0.0  # forward matmul-class FLOPs per token (2 m n k per product)
    act_bytes: float = 0.0  # activation bytes per token kept for backward
    state_bytes: int = 0  # recurrent state per sequence
    kv_bytes: int = 0  # KV-cache growth per token (0 if constant-size)
    ew_flops: float = 0.0  # forward elementwise FLOPs per token (norms, activations, ...)
    bwd_flops: float | None = None  # backward matmul-class FLOPs; None: 2 * flops


ShapeRule = Callable[[Attrs, Sequence[Type]], tuple[Type, ...]]
ParamRule = Callable[[Attrs, Sequence[Type]], tuple[ParamSpec, ...]]
CostRule = Callable[[Attrs, Sequence[Type], tuple[Type, ...], int], Cost]


def _no_params(attrs: Attrs, ins: Sequence[Type]) -> tuple[ParamSpec, ...]:
    return ()


def _no_cost(attrs: Attrs, ins: Sequence[Type], outs: tuple[Type, ...], seq_len: int) -> Cost:
    return Cost()


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: tuple[int, int]
    attrs: dict[str, AttrSpec]
    shape: ShapeRule
    params: ParamRule = _no_params
    cost: CostRule = _no_cost
    regions: bool = False
    elementwise: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check_attrs(self, attrs: Attrs) -> list[str]:
        """Problems with `attrs` against the schema (empty if fine)."""
        problems = []
        for key in attrs:
            if key not in self.attrs:
                problems.append(f"unknown attribute '{key}'")
        for key, spec in self.attrs.items():
            if key not in attrs:
                if spec.default is REQUIRED:
                    problems.append(f"missing attribute '{key}'")
                continue
            value = attrs[key]
            if not isinstance(value, spec.types) or (
                isinstance(value, bool) and bool not in spec.types
            ):
                problems.append(f"attribute '{key}'={value!r} has the wrong type")
            elif spec.choices is not None and value not in spec.choices:
                problems.append(f"attribute '{key}'={value!r} not in {spec.choices}")
        return problems

    def with_defaults(self, attrs: dict[str, Any]) -> Attrs:
        full = {k: s.default for k, s in self.attrs.items() if s.default is not REQUIRED}
        full.update(attrs)
        return Attrs(full)


OPS: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} already registered")
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    return OPS[name]


# -- helpers ------------------------------------------------------------------------
def tensor_of(t: Type, what: str) -> TensorType:
    if not isinstance(t, TensorType):
        raise ShapeError(f"{what} expects a tensor, got {t}")
    return t


def float_seq(t: Type, what: str) -> TensorType:
    t = tensor_of(t, what)
    if t.dtype != "f32" or len(t.dims) != 3:
        raise ShapeError(f"{what} expects a (B, T, D) float tensor, got {t}")
    return t


def same_type(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    return (tensor_of(ins[0], "op"),)


def elems(t: Type) -> int:
    return tensor_of(t, "op").feature


INT, NUM, BOOL, STR, NONE = (int,), (float, int), (bool,), (str,), (type(None),)


def attention_qkv(attrs: Attrs, ins: Sequence[Type], op: str) -> TensorType:
    """Check the (q, k, v) inputs of an attention op against `heads` / `kv_heads`;
    returns q's type (the output's). Keys and values carry kv_heads heads of q's width."""
    q, k, v = (float_seq(t, op) for t in ins)
    h, kvh = attrs["heads"], attrs["kv_heads"]
    if q.feature % h:
        raise ShapeError(f"{op} heads={h} do not divide the query width {q.feature}")
    if h % kvh:
        raise ShapeError(f"kv_heads={kvh} must divide heads={h}")
    hd = q.feature // h
    if k.feature != kvh * hd or v.feature != kvh * hd:
        raise ShapeError(
            f"keys/values of width {k.feature}/{v.feature} do not fit {kvh} kv heads of width {hd}"
        )
    return q
