"""IR value types: tensors with symbolic batch/time dims, recurrent states, parameters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Dim = int | str  # concrete feature size, or a symbol such as "B", "T", "T/4"


@dataclass(frozen=True)
class TensorType:
    """A tensor value: dims such as ("B", "T", 128) and a dtype ("f32" or "i64")."""

    dims: tuple[Dim, ...]
    dtype: str = "f32"

    @property
    def feature(self) -> int:
        """The trailing (feature) size; the IR keeps it concrete."""
        last = self.dims[-1]
        if not isinstance(last, int):
            raise ValueError(f"{self} has no concrete feature dim")
        return last

    def with_feature(self, size: int) -> TensorType:
        return TensorType((*self.dims[:-1], size), self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class StateType:
    """A recurrent carry: named tensors, e.g. h and c of an LSTM, each (L, B, H)."""

    parts: tuple[tuple[str, TensorType], ...]

    def __str__(self) -> str:
        return "state{" + ", ".join(f"{n}: {t}" for n, t in self.parts) + "}"


Type = TensorType | StateType


@dataclass(frozen=True)
class ParamSpec:
    """A parameter a node owns: name (state_dict leaf), shape and initializer name.

    Initializers: "normal(std)", "zeros", "ones", "uniform(bound)". `decay` says whether
    weight decay applies: off for embeddings, norms, biases and state-space decay rates,
    whose scale is meaningful (shrinking them towards zero only hurts).
    """

    name: str
    shape: tuple[int, ...]
    init: str
    decay: bool = True

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __str__(self) -> str:
        return f"{self.name}[{','.join(map(str, self.shape))}]"


class Attrs(Mapping[str, Any]):
    """A frozen, hashable, key-sorted mapping of an op's attributes."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        merged = dict(items or {}, **kwargs)
        self._items = tuple(sorted(merged.items()))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def replace(self, **changes: Any) -> Attrs:
        return Attrs({**dict(self._items), **changes})

    def __repr__(self) -> str:
        return "Attrs(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"
