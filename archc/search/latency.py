"""Measured latency as a search objective: a candidate's forward time on this machine.

`forward_latency_ms(spec)` compiles the spec for the run's device and times its forward
pass (no gradients) on one batch of the spec's `train.batch_size` x `train.seq_len`
random inputs: the fastest of `reps` timed calls after `warmup` untimed ones, since
other load on a shared machine only ever adds time. Milliseconds per batch.
"""

from __future__ import annotations

import time

from archc.frontend.schema import Spec


def random_batch(model: object, batch: int, seq_len: int, device: object) -> object:
    """Inputs of the model's first graph input: token ids (B, T) or features (B, T, D)."""
    import torch

    graph = model.graph  # type: ignore[attr-defined]
    first = graph.node(graph.inputs[0])
    gen = torch.Generator().manual_seed(0)
    if first.attrs["kind"] == "tokens":
        x = torch.randint(0, model.spec.vocab, (batch, seq_len), generator=gen)  # type: ignore[attr-defined]
    else:
        x = torch.randn(batch, seq_len, first.attrs["dim"], generator=gen)
    return x.to(device)


def forward_latency_ms(spec: Spec, reps: int = 5, warmup: int = 2) -> float:
    """The fastest of `reps` forward passes of `spec`'s model, in ms per batch."""
    import torch

    from archc.api import compile as compile_spec
    from archc.runtime.distributed import pick_device

    device = pick_device(spec.train.device)
    seq_len = spec.train.seq_len
    model = compile_spec(spec, device=str(device), seq_len=seq_len).to(device).eval()
    x = random_batch(model, spec.train.batch_size, seq_len, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        for i in range(warmup + reps):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                best = min(best, time.perf_counter() - t0)
    return best * 1e3
