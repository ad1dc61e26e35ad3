"""Memory per token of segment recurrence (RMT memory tokens) vs full attention as T grows.

Run: ``python -m archc.bench.segment [--quick] [--device cpu|cuda]``. Two models with
the same blocks (RMS norm, causal 4-head attention, GELU MLP; d_model 128, 2 blocks)
differ only in how far attention reaches: over the whole sequence, or inside
`segment: {length: 128, carry: memory-tokens(8)}`. For each T it reports, per token:

- `saved/tok`: bytes of the tensors autograd saves for backward in one forward
  (counted with torch.autograd.graph.saved_tensors_hooks, each storage once,
  parameters excluded: deterministic on any device). With SDPA's math backend
  (`--sdpa math`, which keeps the (T, T) attention weights) full attention grows
  linearly per token; the fused kernels keep only O(T) and both stay flat.
- `score/tok`: bytes of the attention-score matrices one forward forms (T^2 per head
  for full attention, at most (k + 2n)^2 per segment for segment recurrence): what the
  math backend materialises.
- `state` (inference, bytes in all): the carried state needed to continue the sequence
  after T tokens: full attention's KV cache (measured from forward(...,
  return_state=True)), linear in T, vs the segment model's memory tokens (plus the
  inputs of an unfinished segment, none at these T), constant.
- `peak/tok` (CUDA only): torch.cuda.max_memory_allocated over forward + backward.

Not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

BLOCK = """
model: {name}
vocab: 256
d_model: 128
define:
  block:
    - residual: [{{norm: rms}}, {{attention: {{heads: 4}}}}]
    - residual: [{{norm: rms}}, {{mlp: {{mult: 4}}}}]
layers:
  - embed
  - {mixer}
  - norm: rms
  - head: {{tied: true}}
"""
FULL = "repeat: {n: 2, body: [block]}"
SEGMENT = "segment: {{length: {k}, carry: memory-tokens({n}), body: [block, block]}}"


def _spec(segment: bool, k: int, n: int) -> str:
    mixer = SEGMENT.format(k=k, n=n) if segment else FULL
    return BLOCK.format(name="rmt" if segment else "full-attention", mixer=mixer)


def saved_bytes(model: Any, x: Any) -> int:
    """Bytes autograd saves for backward in model(x): each storage once, no parameters."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).float().sum().backward()
    return sum(seen.values())


def score_bytes(segment: bool, t: int, k: int, n: int, heads: int = 4, blocks: int = 2) -> int:
    """Attention-score bytes (float32) one forward forms at batch 1."""
    if not segment:
        return 4 * heads * blocks * t * t
    full, rest = divmod(t, k)
    return 4 * heads * blocks * (full * (k + 2 * n) ** 2 + (rest + 2 * n) ** 2 * (rest > 0))


def state_bytes(model: Any, x: Any) -> int:
    """Bytes of the state forward(x, return_state=True) carries past x (KV caches; the
    segment op's memory tokens and unfinished-segment inputs): the storages it keeps."""
    import torch

    with torch.no_grad():
        _, state = model(x, return_state=True)
    seen: dict[int, int] = {}
    todo = list(state.values())
    while todo:
        v = todo.pop()
        if isinstance(v, torch.Tensor):
            seen[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
        elif isinstance(v, dict):
            todo += list(v.values())
        elif isinstance(v, (list, tuple)):
            todo += list(v)
    return sum(seen.values())


def run(lengths: list[int], device: str, sdpa: str, k: int = 128, n: int = 8) -> list[dict]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import archc

    rows = []

    def backend() -> contextlib.AbstractContextManager:
        return sdpa_kernel(SDPBackend.MATH) if sdpa == "math" else contextlib.nullcontext()

    for segment in (False, True):
        model = archc.compile(_spec(segment, k, n), seed=0).to(device)
        for t in lengths:
            x = torch.randint(0, 256, (1, t), device=device)
            with backend():
                saved = saved_bytes(model, x)
                peak = None
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    model(x).float().sum().backward()
                    torch.cuda.synchronize()
                    peak = torch.cuda.max_memory_allocated() - base
                model.zero_grad(set_to_none=True)
            rows.append(
                {
                    "model": "segment" if segment else "full",
                    "T": t,
                    "saved_per_token": saved / t,
                    "score_per_token": score_bytes(segment, t, k, n) / t,
                    "state": state_bytes(model, x),
                    "peak_per_token": None if peak is None else peak / t,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T up to 1024")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    parser.add_argument("--sdpa", default="default", choices=("default", "math"))
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lengths = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
    rows = run(lengths, device, args.sdpa)
    print(f"device {device}, sdpa {args.sdpa}; bytes per token (batch 1, d_model 128, 2 blocks)")
    print(
        f"{'model':8} {'T':>5} {'saved/tok':>10} {'score/tok':>10} {'state':>10} {'peak/tok':>10}"
    )
    for r in rows:
        peak = "-" if r["peak_per_token"] is None else f"{r['peak_per_token']:.0f}"
        print(
            f"{r['model']:8} {r['T']:>5} {r['saved_per_token']:>10.0f} "
            f"{r['score_per_token']:>10.0f} {r['state']:>10} {peak:>10}"
        )


if __name__ == "__main__":
    main()
