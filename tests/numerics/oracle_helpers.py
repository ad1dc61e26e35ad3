"""Shared oracles for the numerics tests: spec text, error checks, reference attention.

Every expected value in tests/numerics comes from something other than archc's own
code; the pieces several files need live here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

SPECS = Path(__file__).resolve().parents[2] / "specs"
TOL = 1e-5


def spec_text(
    layers: list[Any],
    d_model: int = 16,
    vocab: int | None = None,
    define: dict[str, Any] | None = None,
) -> str:
    """YAML text of a spec (features input unless the layers start with embed)."""
    data: dict[str, Any] = {"model": "oracle"}
    if vocab is not None:
        data["vocab"] = vocab
    data["d_model"] = d_model
    if define:
        data["define"] = define
    data["layers"] = layers
    return yaml.safe_dump(data, sort_keys=False)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    err = max_err(a, b)
    assert err <= tol, f"max abs error {err:.3e} > {tol:.0e}"


def randomize(model: nn.Module, scale: float = 0.3) -> None:
    """Give every parameter random values (so ones/zeros initialisers hide nothing)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)


def ref_mask(t: int, causal: bool, window: int | None) -> torch.Tensor | None:
    """Boolean (T, T) mask, True where query i may attend to key j."""
    if not causal and window is None:
        return None
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = torch.ones(t, t, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= (i - j).abs() < window
    return allowed


def ref_rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate-half rotary embedding of x (B, H, T, hd); angles and products in float64."""
    t, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    freqs = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * freqs[None, :]  # (T, half)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x.double()[..., :half], x.double()[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


class RefAttention(nn.Module):
    """Multi-head attention written out: q/k/v/o linears, own masks, rope and GQA."""

    def __init__(
        self,
        d: int,
        heads: int,
        kv_heads: int | None = None,
        causal: bool = True,
        window: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.h, self.kv = heads, kv_heads or heads
        self.hd = d // heads
        self.causal, self.window, self.rope, self.base = causal, window, rope, rope_base
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, self.kv * self.hd, bias=bias)
        self.v = nn.Linear(d, self.kv * self.hd, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        if self.rope:
            q, k = ref_rope(q, self.base), ref_rope(k, self.base)
        if self.kv != self.h:
            owner = torch.arange(self.h) // (self.h // self.kv)  # query head -> its kv head
            k, v = k[:, owner], v[:, owner]
        mask = ref_mask(t, self.causal, self.window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


def map_keys(sd: dict[str, torch.Tensor], table: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        for pattern, repl in table:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                out[new] = value
                break
        else:
            raise AssertionError(f"compiled key {key!r} has no counterpart in the reference")
    return out


def run_in_chunks(
    model: torch.nn.Module, ids: torch.Tensor, sizes: tuple[int, ...]
) -> tuple[torch.Tensor, dict]:
    """Outputs of `model` fed `ids` (B, T) in pieces of `sizes`, carrying the state;
    returns (the concatenated (B, T, out), the final state)."""
    ys, state, i = [], None, 0
    for c in sizes:
        y, state = model(ids[:, i : i + c], state=state, return_state=True)
        ys.append(y)
        i += c
    assert i == ids.shape[1], "sizes must cover the sequence"
    return torch.cat(ys, 1), state


Ref = Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def check_layer_against_reference(
    model: nn.Module, path: str, ref: Ref, vocab: int, t: int, rel: float
) -> None:
    """A float64 model `embed, <layer at path>, head` against `ref`, the layer's
    step-by-step recurrence, (x (B, T, D), its params) -> (y, final carry): outputs and
    the final carry within `rel`, every parameter gradient within 1e-8 (relative RMS)."""
    from archc.backends.triton.testing import rel_rms

    def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
        assert a.shape == b.shape, (a.shape, b.shape)
        # The floor: a gradient that is exactly 0 in one and rounding noise in the other.
        return rel_rms(a, b, floor=1e-6)

    params = dict(model.named_parameters())
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    ref_p = {k.removeprefix(path + "."): v for k, v in leaves.items() if k.startswith(path)}
    assert ref_p, f"no parameters under {path}"
    ids = torch.randint(0, vocab, (2, t), generator=torch.Generator().manual_seed(t))
    y, state = model(ids, return_state=True)
    h_ref, final_ref = ref(leaves["layers.0.embed.weight"][ids], ref_p)
    y_ref = h_ref @ leaves["layers.2.head.weight"].T
    assert _rel(y.detach(), y_ref.detach()) < rel
    assert _rel(state[path].detach(), final_ref.detach()) < rel
    weights = torch.randn(y.shape, dtype=torch.float64)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    for name, p in params.items():
        assert p.grad is not None and leaves[name].grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert _rel(p.grad, leaves[name].grad) < 1e-8, name


def assert_values_and_grads_match(
    y: torch.Tensor, ref: torch.Tensor, inputs: Sequence[torch.Tensor], tol: float = 1e-10
) -> None:
    """y equals ref, and so do the gradients of a random weighted sum of each with
    respect to `inputs` (rtol = atol = tol)."""
    torch.testing.assert_close(y, ref, rtol=tol, atol=tol)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * w).sum(), inputs)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def assert_located_error(
    tmp_path: Path, d_model: int, kind: str, params: str, key: str, message: str
) -> None:
    """`archc check` of a one-layer spec `- kind: params` (flow YAML) fails with `message`,
    located on line 4 at the column of `key`'s value."""
    from archc.cli import run

    path = tmp_path / "bad.yaml"
    prefix = f"  - {kind}: "
    path.write_text(f"model: bad\nd_model: {d_model}\nlayers:\n{prefix}{params}\n")
    lines: list[str] = []
    assert run(["check", str(path)], handler=lines.append) == 2
    text = "\n".join(lines)
    col = len(prefix) + params.index(key) + len(key) + 2 + 1  # past "key: ", 1-based
    assert f"{path}:4:{col}: error: " in text, text
    assert message in text, text
