"""Loss and accuracy on supervised positions, and the evaluation loop."""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.compiled import Supervision
from archc.runtime.curriculum import CurriculumState
from archc.runtime.tasks import IGNORE, Batch


def per_head_logits(logits: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, K*C) -> (B, T, K, C) for K heads; unchanged for one head."""
    if heads == 1:
        return logits
    b, t, w = logits.shape
    return logits.view(b, t, heads, w // heads)


def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over supervised positions: logits (..., C), targets (...)."""
    c = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, c).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-head correct predictions at supervised positions: (...,) summed to (K,) or ()."""
    hit = (logits.argmax(-1) == targets) & (targets != IGNORE)
    return hit.flatten(0, 1).sum(0)


def supervision(targets: torch.Tensor, heads: int, scale: float) -> Supervision:
    """The batch's targets (B, T) or (B, T, K) for modules' supervised losses (HRM-style
    halting): per-position cross-entropy summed over heads times `scale` (what the main
    loss multiplies its sum by), and per-position correctness of every head."""

    def loss(pred: torch.Tensor) -> torch.Tensor:
        logits = per_head_logits(pred, heads)
        c = logits.shape[-1]
        flat, want = logits.reshape(-1, c).float(), targets.reshape(-1)
        each = F.cross_entropy(flat, want, ignore_index=IGNORE, reduction="none")
        return each.view(targets.shape[0], targets.shape[1], -1).sum(-1) * scale

    def correct(pred: torch.Tensor) -> torch.Tensor:
        hit = (per_head_logits(pred, heads).argmax(-1) == targets) | (targets == IGNORE)
        return hit if hit.dim() == 2 else hit.all(-1)

    return Supervision(loss, correct)


def supervised(targets: torch.Tensor) -> torch.Tensor:
    return (targets != IGNORE).flatten(0, 1).sum(0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    curriculum: CurriculumState,
    batches: Iterable[Batch],
    device: torch.device,
    autocast: AbstractContextManager | None = None,
) -> dict[str, float]:
    """Loss, accuracy (and bits per byte for text) over `batches`.

    Multi-head curricula also report accuracy per head reached (`accuracy_<param><v>`);
    their `accuracy` is the lowest of those, which is what gates the next level.
    """
    was_training = model.training
    model.eval()
    heads = curriculum.heads
    total_loss, total = 0.0, 0
    correct = torch.zeros(heads, dtype=torch.long)
    count = torch.zeros(heads, dtype=torch.long)
    try:
        for batch in batches:
            targets = curriculum.targets(batch).to(device)
            with autocast or nullcontext():
                logits = model(batch.inputs.to(device))
            logits = per_head_logits(logits, heads)
            total_loss += float(loss_sum(logits, targets))
            total += int((targets != IGNORE).sum())
            correct += correct_count(logits, targets).cpu().reshape(heads)
            count += supervised(targets).cpu().reshape(heads)
    finally:
        model.train(was_training)
    loss = total_loss / max(1, total)
    out = {"loss": loss}
    reached = [j for j in range(heads) if count[j] > 0]
    accs = {j: float(correct[j]) / float(count[j]) for j in reached}
    if heads == 1:
        out["accuracy"] = accs.get(0, 0.0)
    else:
        cfg = curriculum.cfg
        assert cfg is not None
        for j, acc in accs.items():
            out[f"accuracy_{cfg.param}{curriculum.values[j]}"] = acc
        out["accuracy"] = min(accs.values()) if accs else 0.0
    if curriculum.base.is_text:
        out["bpb"] = loss / math.log(2)
    return out
