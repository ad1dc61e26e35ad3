"""The `hier` spec component: a multi-timescale hierarchy whose body (the inner network)
runs on a shorter, coarse sequence.

    hier: {down: {stride: 4, pool: mean}, up: repeat, body: [...]}      # CM-HRNN tiers
    hier: {down: router, up: ema, body: [...]}                          # H-Net chunking
    hier: {down: {router: true, target: 3, weight: 0.03}, body: [...]}
    hier: {down: {split: whitespace}, body: [...]}                      # HAT byte -> word
    hier: {down: 4, up: cross-attn, heads: 4, body: [...]}   # positions attend to steps

The body (the inner network) may also be written `inner: [...]`.

Registered by components.py (this module only defines the parameter models).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from archc.frontend.components import Params


class HierDown(Params):
    """How the coarse sequence is formed: exactly one of stride, router or split."""

    stride: int | None = Field(default=None, gt=0, description="fixed groups of k tokens")
    pool: Literal["mean", "last"] = Field(default="mean", description="stride: group -> step")
    router: bool = Field(default=False, description="H-Net dynamic chunking")
    target: float = Field(default=4.0, gt=1.0, description="router: target compression N")
    weight: float = Field(default=0.03, ge=0.0, description="router: ratio loss weight")
    split: Literal["whitespace"] | None = Field(default=None, description="byte -> word")

    @model_validator(mode="after")
    def _exactly_one(self) -> HierDown:
        chosen = [k for k, on in (("stride", self.stride), ("router", self.router),
                                  ("split", self.split)) if on]  # fmt: skip
        if len(chosen) != 1:
            raise ValueError(
                "down needs exactly one of stride: k, router: true or split: whitespace"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return self

    def kind(self) -> str:
        return "stride" if self.stride else "router" if self.router else "split"


class HierParams(Params):
    down: HierDown
    up: Literal["repeat", "linear", "ema", "cross-attn"] | None = Field(
        default=None,
        description="repeat | linear (stride) | ema (router) | cross-attn; default by down",
    )
    heads: int = Field(default=4, gt=0, description="up: cross-attn heads")
    causal: bool = Field(default=True, description="fine positions never read future tokens")
    dim: int | None = Field(
        default=None, gt=0, description="width of the inner network (default: the input's)"
    )

    @field_validator("down", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # down: router | whitespace | 4  ->  the mapping forms
        if v == "router":
            return {"router": True}
        if v == "whitespace":
            return {"split": "whitespace"}
        if isinstance(v, int) and not isinstance(v, bool):
            return {"stride": v}
        if not isinstance(v, dict):
            raise ValueError(
                "down must be router, whitespace, a stride k, or a mapping such as "
                "{stride: 4, pool: mean}, {router: true, target: 4} or {split: whitespace}"
            )
        return v

    def up_mode(self) -> str:
        return self.up or ("ema" if self.down.router else "repeat")
