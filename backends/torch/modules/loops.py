"""Run-time pieces of the `loop` and `halt` control ops (the loop itself is generated
straight-line code, see backends/torch/codegen.py `loop`).

Uses only math/torch/nn/F: the standalone emitter copies this source into model.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def loop_steps(kind: str, a: float, b: float, eval_steps: int, training: bool) -> int:
    """The iteration count of one forward: in training drawn from the sampler
    ('uniform': a..b inclusive, 'poisson': mean a, at least 1) with torch's global RNG,
    so a seeded run (and one resumed with its RNG state) draws the same counts; in eval
    the fixed `eval_steps`."""
    if not training:
        return eval_steps
    if kind == "uniform":
        return int(torch.randint(int(a), int(b) + 1, ()).item())
    return max(1, int(torch.poisson(torch.tensor(float(a))).item()))


class LoraAdapter(nn.Module):
    """One iteration's rank-r adapter of one linear: a (r, in), b (out, r)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # reset_parameters re-initialises by the IR's table
        self.a = nn.Parameter(torch.empty(rank, d_in).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(d_out, rank))


class LoopExtras(nn.Module):
    """Parameters a loop owns besides its body: the concat-injection linear and the
    per-iteration LoRA adapters of the body's linears (Relaxed Recursive Transformers).

    `lora[t][i]` is the adapter of body linear t at the i-th iteration that runs its
    region: iteration s of a loop with k weight copies uses i = s // k (set in `slot`
    by the loop before each iteration), so it computes W x + B_i A_i x.
    """

    def __init__(self, d: int, inject: str, rank: int, targets: tuple) -> None:
        super().__init__()
        self.inject = nn.Linear(2 * d, d) if inject == "concat" else None
        self.lora = nn.ModuleList(
            nn.ModuleList(LoraAdapter(d_in, d_out, rank) for _ in range(count))
            for d_in, d_out, count in targets
        )
        self.slot = 0

    def combine(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The body input from the carried state and the loop input, both (B, T, D):
        linear([state, x]) (concat) back to width D."""
        assert self.inject is not None
        return self.inject(torch.cat([state, x], dim=-1))

    def adapt(self, t: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y = W x (the body linear's output) plus this iteration's B A x."""
        ad = self.lora[t][self.slot]
        return y + F.linear(F.linear(x, ad.a), ad.b)


class Halt(nn.Module):
    """Adaptive computation (HRM's ACT): run `body` up to `max_steps` times with halting
    masks; a halted sample (per='sample') or position (per='token') keeps its state.

    Halting: `criterion='delta'` halts where the relative change of the state
    ||z_new - z|| / ||z|| falls below `threshold`; `criterion='q-head'` halts where a
    linear Q-head on the pooled state predicts Q_halt > Q_continue (HRM). Pooling is the
    mean over time per sample, or the causal prefix mean per position (so a causal model
    stays causal: position t's halting depends on positions <= t only). In training,
    with probability `explore` (q-head only) a sample/position gets a random minimum of 2..max_steps
    steps (HRM's exploration). Every position halts at `max_steps`.

    Q-learning targets (HRM's, with a label-free correctness proxy): HRM's Q_halt target
    is whether the current answer is correct, which needs the task's labels; this module
    sees no labels, so it uses the fixed-point proxy "the step changed the state by less
    than `threshold`" (a converged state will give the same answer if run further, so
    halting there costs nothing). Q_continue's target is HRM's bootstrap:
    sigmoid(max(Q_halt, Q_continue)) of the next step, detached, where a next step ran.
    Both are binary cross-entropy on the logits, recorded as 0.5 * (halt + continue) in
    `aux_loss_value`. `stats_values['steps']` is the mean number of steps used.
    """

    def __init__(
        self,
        d: int,
        max_steps: int,
        criterion: str,
        explore: float,
        threshold: float,
        min_steps: int,
        per: str,
    ) -> None:
        super().__init__()
        self.q = nn.Linear(d, 2) if criterion == "q-head" else None
        self.max_steps, self.criterion, self.explore = max_steps, criterion, explore
        self.threshold, self.min_steps, self.per = threshold, min_steps, per
        self.aux_loss_value: torch.Tensor | None = None
        self.stats_values: dict[str, float] = {}

    def _pool(self, z: torch.Tensor, past: tuple[torch.Tensor, int] | None) -> torch.Tensor:
        """(B, T, D) -> (B, 1, D) mean (per sample) or (B, T, D) causal prefix mean, the
        prefix continuing `past` = (sum (B, 1, D), count) of earlier chunks."""
        if self.per == "sample":
            return z.mean(1, keepdim=True)
        start = 0 if past is None else past[1]
        count = torch.arange(start + 1, start + z.shape[1] + 1, device=z.device, dtype=z.dtype)
        total = z.cumsum(1) if past is None else z.cumsum(1) + past[0]
        return total / count[:, None]

    def _delta(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Relative change, (B, 1) per sample or (B, T) per position."""
        dims = (1, 2) if self.per == "sample" else (2,)
        num = (new - old).detach().norm(dim=dims)
        den = old.detach().norm(dim=dims).clamp_min(1e-12)
        out = num / den
        return out[:, None] if self.per == "sample" else out

    def forward(
        self,
        x: torch.Tensor,
        body: Callable[[torch.Tensor, int], torch.Tensor],
        carry: dict | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """x (B, T, D) -> (the state after each sample's/position's own number of steps,
        the carry for the next chunk). `body(z, i)` runs step i (its caches are keyed by
        the step). `carry` is the previous chunk's (incremental runs, per='token'): the
        prefix sums of every step's state for the causal pooling. When a carry is given
        or asked for (carry={}), every step runs, even once all positions halted, so
        each step's caches cover every position."""
        b, t, _ = x.shape
        shape = (b, 1) if self.per == "sample" else (b, t)
        z = x
        running = torch.ones(shape, dtype=torch.bool, device=x.device)
        used = torch.zeros(shape, device=x.device)
        min_halt = torch.full(shape, self.min_steps, device=x.device)
        if self.training and self.explore > 0 and self.q is not None:
            explore = torch.rand(shape, device=x.device) < self.explore
            draw = torch.randint(2, self.max_steps + 1, shape, device=x.device)
            min_halt = torch.where(explore, torch.maximum(draw, min_halt), min_halt)
        sums = None if not carry else carry["sums"]
        count = 0 if not carry else carry["count"]
        new_sums: list[torch.Tensor] = []
        qs: list[torch.Tensor] = []
        ran: list[torch.Tensor] = []
        halt_target: list[torch.Tensor] = []
        for i in range(self.max_steps):
            if carry is None and not bool(running.any()):
                break
            new = body(z, i)
            delta = self._delta(new, z)
            ran.append(running)
            used = used + running
            z = torch.where(running[..., None], new, z)  # halted ones keep their state
            if self.q is not None:
                past = None if sums is None else (sums[i], count)
                q = self.q(self._pool(new, past))  # (*shape, 2): (halt, continue) logits
                new_sums.append(new.sum(1, keepdim=True) + (0 if sums is None else sums[i]))
                qs.append(q)
                halt_target.append((delta < self.threshold).to(q.dtype))
                halt_now = q[..., 0] > q[..., 1]
            else:
                halt_now = delta < self.threshold
            halt_now = (halt_now & (i + 1 >= min_halt)) | (i + 1 >= self.max_steps)
            running = running & ~halt_now
        self.stats_values = {"steps": float(used.mean())}
        if self.q is not None and self.training and torch.is_grad_enabled():
            self.aux_loss_value = self._q_loss(qs, ran, halt_target)
        return z, {"sums": [s.detach() for s in new_sums], "count": count + t}

    def _q_loss(
        self, qs: list[torch.Tensor], ran: list[torch.Tensor], halt_target: list[torch.Tensor]
    ) -> torch.Tensor:
        halt_l, cont_l = qs[0].new_zeros(()), qs[0].new_zeros(())
        n_halt, n_cont = 0.0, 0.0
        for i, q in enumerate(qs):
            m = ran[i].to(q.dtype)
            bce = F.binary_cross_entropy_with_logits(q[..., 0], halt_target[i], reduction="none")
            halt_l = halt_l + (bce * m).sum()
            n_halt += float(m.sum())
            if i + 1 < len(qs):  # bootstrap from the next step where it ran
                nxt = torch.sigmoid(qs[i + 1].detach().max(-1).values)
                mc = ran[i + 1].to(q.dtype)
                bce = F.binary_cross_entropy_with_logits(q[..., 1], nxt, reduction="none")
                cont_l = cont_l + (bce * mc).sum()
                n_cont += float(mc.sum())
        return 0.5 * (halt_l / max(n_halt, 1.0) + cont_l / max(n_cont, 1.0))
