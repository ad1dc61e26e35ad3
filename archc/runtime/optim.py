"""Optimizer, learning-rate schedule and gradient noise for a compiled model."""

from __future__ import annotations

import math

import torch
from torch import nn

from archc.frontend.train import GradNoise, TrainConfig
from archc.ir.graph import Graph


def decay_flags(graph: Graph) -> dict[str, bool]:
    """Parameter name -> whether weight decay applies, as the op table declares it.

    Embeddings, norms, biases and state-space decay rates are declared `decay=False`
    in archc/ir/ops.py; tied weights appear once, under their owner.
    """
    return {f"{n.path}.{p.name}": p.decay for n in graph.walk() for p in n.params}


def param_groups(model: nn.Module, graph: Graph, weight_decay: float) -> list[dict]:
    """AdamW groups: decayed and not decayed parameters."""
    flags = decay_flags(graph)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # A parameter the IR doesn't know (a hand-added module) decays if it is a matrix.
        (decay if flags.get(name, p.ndim >= 2) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, graph: Graph, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, graph, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based): warm-up, then the schedule."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    floor = cfg.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg))


class GradientNoise:
    """Adds N(0, eta / (1 + t)^gamma) to every gradient (Neelakantan et al., 2015).

    Its own generator keeps the noise identical on every DDP rank (gradients are
    already averaged when it runs) and reproducible across resume.
    """

    def __init__(self, cfg: GradNoise, seed: int) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed + 0x5EED)

    def apply(self, params: list[nn.Parameter], step: int) -> None:
        std = math.sqrt(self.cfg.eta / (1.0 + step) ** self.cfg.gamma)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    noise = torch.randn(p.grad.shape, generator=self.gen, dtype=torch.float32)
                    p.grad.add_(noise.to(p.grad.device, p.grad.dtype), alpha=std)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
