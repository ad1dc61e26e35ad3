"""Constants and feature-dim reshapes: the small ops the rewrite passes fold.

- const {value}: a tensor of the input's type filled with `value`; the input only
  gives the shape (B, T, ...), so a constant needs no symbolic-size attributes.
- scale {factor}: y = factor * x.
- reshape {shape}: (B, T, *f) -> (B, T, *shape), the feature part regrouped (same
  number of elements, row-major order).
- rearrange {perm}: (B, T, f0, f1, ...) -> (B, T, f[perm[0]], f[perm[1]], ...), a
  permutation of the feature axes (einops `b t h d -> b t d h` is perm (1, 0)).

None is marked `elementwise`: fuse-pointwise only fuses the ops it knows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from archc.ir.opdef import NUM, AttrSpec, Cost, OpDef, ShapeError, tensor_of
from archc.ir.types import Attrs, TensorType, Type


def _float(t: Type, what: str) -> TensorType:
    t = tensor_of(t, what)
    if t.dtype != "f32" or len(t.dims) < 3:
        raise ShapeError(f"{what} expects a (B, T, ...) float tensor, got {t}")
    return t


def _ints(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not value:
        raise ShapeError(f"{what} must be a non-empty tuple of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ShapeError(f"{what} must hold positive ints, got {value!r}")
    return value


def _const_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    if not math.isfinite(float(attrs["value"])):
        raise ShapeError(f"const value must be finite, got {attrs['value']!r}")
    return (_float(ins[0], "const"),)


def _scale_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    if not math.isfinite(float(attrs["factor"])):
        raise ShapeError(f"scale factor must be finite, got {attrs['factor']!r}")
    return (_float(ins[0], "scale"),)


def _feature(t: TensorType, what: str) -> tuple[int, ...]:
    f = t.dims[2:]
    if not all(isinstance(d, int) for d in f):
        raise ShapeError(f"{what} needs concrete feature dims, got {t}")
    return f  # type: ignore[return-value]


def _reshape_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float(ins[0], "reshape")
    shape = _ints(attrs["shape"], "reshape shape")
    if math.prod(_feature(t, "reshape")) != math.prod(shape):
        raise ShapeError(f"reshape of {t} to feature shape {shape} changes the element count")
    return (TensorType((*t.dims[:2], *shape), t.dtype),)


def _rearrange_shape(attrs: Attrs, ins: Sequence[Type]) -> tuple[Type, ...]:
    t = _float(ins[0], "rearrange")
    f = _feature(t, "rearrange")
    perm = attrs["perm"]
    if not isinstance(perm, tuple) or sorted(perm) != list(range(len(f))):
        raise ShapeError(f"rearrange perm {perm!r} is not a permutation of {len(f)} axes")
    return (TensorType((*t.dims[:2], *(f[p] for p in perm)), t.dtype),)


def _numel(t: Type) -> int:
    return math.prod(_feature(tensor_of(t, "op"), "op"))  # type: ignore[arg-type]


CONST_OPS = (
    OpDef(
        "const",
        (1, 1),
        {"value": AttrSpec(NUM)},
        _const_shape,
        doc="a tensor shaped like the input, filled with `value`",
    ),
    OpDef(
        "scale",
        (1, 1),
        {"factor": AttrSpec(NUM)},
        _scale_shape,
        cost=lambda a, i, o, T: Cost(ew_flops=float(_numel(i[0]))),
        doc="multiply by a constant factor",
    ),
    OpDef(
        "reshape",
        (1, 1),
        {"shape": AttrSpec((tuple,))},
        _reshape_shape,
        doc="regroup the feature dims (B, T, *f) -> (B, T, *shape)",
    ),
    OpDef(
        "rearrange",
        (1, 1),
        {"perm": AttrSpec((tuple,))},
        _rearrange_shape,
        doc="permute the feature axes (B, T, f0, f1, ...) by `perm`",
    ),
)
