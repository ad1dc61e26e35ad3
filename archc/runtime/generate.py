"""Sampling from a trained model, carrying its state between tokens.

The prompt is run once (prefill); every further token is a (1, 1) forward that reads
the carried state: recurrent models do constant work per token, attention models
attend to their KV cache. The prefix is never re-run.
"""

from __future__ import annotations

import torch

from archc.backends.torch.compiled import CompiledModel
from archc.diagnostics import error
from archc.ir.graph import Graph


def position_limit(graph: Graph) -> int | None:
    """The longest sequence the model's position tables cover (None: unbounded)."""
    limits = [
        n.attrs["max_len"]
        for n in graph.walk()
        if n.op == "posenc" and n.attrs["kind"] in ("learned", "sinusoidal")
    ]
    return min(limits) if limits else None


def sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator
) -> torch.Tensor:
    """One token id per row from logits (B, V): greedy at temperature 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


@torch.no_grad()
def generate(
    model: CompiledModel,
    prompt: torch.Tensor,
    tokens: int,
    vocab: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> list[int]:
    """`tokens` new ids after `prompt` (T,), sampled among the first `vocab` logits."""
    ok, why = model.incremental_support()
    if not ok:
        raise error(f"this model cannot generate token by token: {why}")
    if prompt.numel() == 0:
        raise error("the prompt is empty", hint="pass --prompt with at least one character")
    limit = position_limit(model.graph)
    if limit is not None and prompt.numel() + tokens > limit:
        raise error(
            f"prompt ({prompt.numel()}) + tokens ({tokens}) exceed the model's "
            f"{limit} positions (posenc max_len)",
            hint=f"generate at most {max(0, limit - prompt.numel())} tokens",
        )
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        logits, state = model(prompt[None].to(device), return_state=True)
        out: list[int] = []
        for i in range(tokens):
            nxt = sample(logits[:, -1, :vocab], temperature, top_k, gen)
            out.append(int(nxt[0]))
            if i + 1 < tokens:  # one (1, 1) step per new token, reading the carried state
                logits, state = model(nxt[:, None], state=state, return_state=True)
    finally:
        model.train(was_training)
    return out
