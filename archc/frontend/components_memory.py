"""Spec components of neural memory (DESIGN.md section 4's `memory(store, write, read)`)
and of Titans' compositions of memory with attention (MAC, MAG, MAL)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.frontend.components import Params


class MemoryParams(Params):
    """A memory layer (B, T, D) -> (B, T, D) with `heads` heads.

    store: mlp (Titans' neural memory: an MLP of `depth` 1 or 2 written by a gradient
    step on ||M(k) - v||^2 with data-dependent learning rate <= `lr`, momentum and decay;
    `window` > 1 is ATLAS's Omega rule, the loss summed over the last `window` tokens;
    gradients taken at the memory of the `chunk` start) | matrix (a per-head matrix:
    write delta = DeltaNet, add = gated linear attention) | tokens (append keys/values
    and attend, keeping the last `n` tokens, or all)."""

    store: Literal["mlp", "matrix", "tokens"] = "mlp"
    write: Literal["grad", "delta", "add", "append"] | None = Field(
        default=None, description="default: grad (mlp), delta (matrix), append (tokens)"
    )
    read: Literal["apply", "attend"] | None = Field(
        default=None, description="default: apply (mlp, matrix), attend (tokens)"
    )
    heads: int = Field(default=4, gt=0)
    depth: int = Field(default=2, ge=1, le=2, description="mlp: layers of the memory MLP")
    mult: float = Field(default=2.0, gt=0, description="mlp: hidden width / head width")
    chunk: int = Field(default=16, gt=0, description="mlp, matrix: chunk length")
    window: int = Field(default=1, gt=0, description="mlp: Omega-rule window (1: Titans)")
    lr: float = Field(default=0.01, gt=0, description="mlp: the largest inner learning rate")
    mode: Literal["chunked", "sequential"] = Field(
        default="chunked", description="mlp, matrix: chunked or one token at a time"
    )
    n: int | None = Field(default=None, gt=0, description="tokens: tokens kept (default all)")


class TitansParams(Params):
    """A Titans block (B, T, D) -> (B, T, D): neural memory (as in `memory`, store: mlp)
    composed with attention. mac: memory as context (per segment of `chunk` tokens,
    attention over [`persist` tokens, memory retrieval, segment]); mag: memory as gate
    (rms(sliding-window attention) * sigmoid(rms(memory))); mal: memory as layer (the
    memory, then sliding-window attention)."""

    variant: Literal["mac", "mag", "mal"] = "mag"
    heads: int = Field(default=4, gt=0)
    chunk: int = Field(default=16, gt=0, description="memory chunk (mac: segment) length")
    depth: int = Field(default=2, ge=1, le=2)
    mult: float = Field(default=2.0, gt=0)
    window: int | None = Field(
        default=None, gt=0, description="mag, mal: attention window (default 2 * chunk)"
    )
    omega: int = Field(default=1, gt=0, description="mag, mal: Omega-rule window")
    lr: float = Field(default=0.01, gt=0)
    persist: int | None = Field(default=None, gt=0, description="mac: persistent tokens (4)")
    mode: Literal["chunked", "sequential"] = "chunked"
