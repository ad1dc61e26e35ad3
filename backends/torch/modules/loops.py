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
    with probability `explore` (q-head only) a sample/position gets a random minimum of
    2..max_steps steps (HRM's exploration). Every position halts at `max_steps`.

    Q-learning (HRM): Q_halt's target is `target='answer'`: the prediction after the
    step is correct (the whole sequence per sample, the position's token per token),
    which needs the training targets, given later to `supervised_loss`; or
    `target='converged'`: label-free, the step changed the state by less than
    `threshold`. Q_continue's target bootstraps from the next step, detached:
    sigmoid(Q_halt) if that step is the last, else sigmoid(max(Q_halt, Q_continue)).
    Both are binary cross-entropy on the logits, 0.5 * (halt + continue).

    `supervise='deep'` (HRM's deep supervision): every step starts from the previous
    state detached, and each step's prediction is scored where the sample/position ran
    and went on (the step it halted at is the model's output, scored by the main loss),
    so each step's gradient reaches only that step's body, as if every step were its own
    training segment.

    `readout(z)` maps a step's state to the model's prediction (the layers after the
    halt, generated); it is applied to every step in training when the targets are
    needed. `stats_values`: 'steps' (the mean steps used) and, with answer targets,
    'q_halt_acc' (how often Q_halt > 0 agrees with the answer being right).
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
        target: str = "converged",
        supervise: str = "last",
        inject: str = "none",
    ) -> None:
        super().__init__()
        self.q = nn.Linear(d, 2) if criterion == "q-head" else None
        self.max_steps, self.criterion, self.explore = max_steps, criterion, explore
        self.threshold, self.min_steps, self.per = threshold, min_steps, per
        self.target, self.supervise, self.inject = target, supervise, inject
        self.aux_loss_value: torch.Tensor | None = None
        self.stats_values: dict[str, float] = {}
        self._pending: dict | None = None  # per-step record awaiting the targets

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
        readout: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """x (B, T, D) -> (the state after each sample's/position's own number of steps,
        the carry for the next chunk). `body(z, i)` runs step i (its caches are keyed by
        the step). `carry` is the previous chunk's (incremental runs, per='token'): the
        prefix sums of every step's state for the causal pooling. When a carry is given
        or asked for (carry={}), every step runs, even once all positions halted, so
        each step's caches cover every position."""
        b, t, _ = x.shape
        shape = (b, 1) if self.per == "sample" else (b, t)
        z = torch.zeros_like(x) if self.inject == "add" else x
        running = torch.ones(shape, dtype=torch.bool, device=x.device)
        used = torch.zeros(shape, device=x.device)
        min_halt = torch.full(shape, self.min_steps, device=x.device)
        if self.training and self.explore > 0 and self.q is not None:
            explore = torch.rand(shape, device=x.device) < self.explore
            draw = torch.randint(2, self.max_steps + 1, shape, device=x.device)
            min_halt = torch.where(explore, torch.maximum(draw, min_halt), min_halt)
        learn = self.training and torch.is_grad_enabled()
        scored = learn and readout is not None
        deep = learn and self.supervise == "deep"
        sums = None if not carry else carry["sums"]
        count = 0 if not carry else carry["count"]
        new_sums: list[torch.Tensor] = []
        rec: dict[str, list] = {"q": [], "ran": [], "halted": [], "target": [], "pred": []}
        for i in range(self.max_steps):
            if carry is None and not bool(running.any()):
                break
            start = z.detach() if deep else z
            new = body(start + x if self.inject == "add" else start, i)
            delta = self._delta(new, z)
            rec["ran"].append(running)
            used = used + running
            z = torch.where(running[..., None], new, z)  # halted ones keep their state
            if scored:
                rec["pred"].append(readout(new))
            if self.q is not None:
                past = None if sums is None else (sums[i], count)
                q = self.q(self._pool(new, past))  # (*shape, 2): (halt, continue) logits
                new_sums.append(new.sum(1, keepdim=True) + (0 if sums is None else sums[i]))
                rec["q"].append(q)
                if self.target == "converged":
                    rec["target"].append((delta < self.threshold).to(q.dtype))
                halt_now = q[..., 0] > q[..., 1]
            else:
                halt_now = delta < self.threshold
            halt_now = (halt_now & (i + 1 >= min_halt)) | (i + 1 >= self.max_steps)
            rec["halted"].append(running & halt_now)
            running = running & ~halt_now
        self.stats_values = {"steps": float(used.mean())}
        self._pending = None
        if learn and self.q is not None and self.target == "converged":
            self.aux_loss_value = self._q_loss(rec["q"], rec["ran"], rec["target"])
        if scored and (self.supervise == "deep" or self.q is not None):
            self._pending = rec  # scored once the targets arrive: supervised_loss
        return z, {"sums": [s.detach() for s in new_sums], "count": count + t}

    def supervised_loss(self, sup: object) -> torch.Tensor | None:
        """The losses that need the training targets, for the last forward: the Q-head's
        with answer targets and, with deep supervision, every earlier step's prediction
        loss. `sup` has `loss(pred) -> (B, T)` per-position losses already scaled like
        the main loss (summing them gives its contribution) and `correct(pred) -> (B, T)`
        bool (True where right or unsupervised). None if the forward recorded nothing
        or `sup` is None (no targets: the record is dropped)."""
        rec, self._pending = self._pending, None
        if rec is None or sup is None:
            return None
        total = None
        if self.q is not None and self.target == "answer":
            right = [self._per(sup.correct(p)) for p in rec["pred"]]  # type: ignore[attr-defined]
            targets = [r.to(q.dtype) for r, q in zip(right, rec["q"], strict=True)]
            total = self._q_loss(rec["q"], rec["ran"], targets)
            agree = [
                ((q[..., 0] > 0) == r)[m]
                for q, r, m in zip(rec["q"], right, rec["ran"], strict=True)
            ]
            self.stats_values["q_halt_acc"] = float(torch.cat(agree).float().mean())
        if self.supervise == "deep":
            for pred, ran, halted in zip(rec["pred"], rec["ran"], rec["halted"], strict=True):
                went_on = (ran & ~halted).to(pred.dtype)  # halted steps: the main loss
                part = (sup.loss(pred) * went_on).sum()  # type: ignore[attr-defined]
                total = part if total is None else total + part
        return total

    def _per(self, right: torch.Tensor) -> torch.Tensor:
        """(B, T) per-position correctness -> the halting unit's: (B, 1) all-correct per
        sample, or (B, T) as is per token."""
        return right.all(1, keepdim=True) if self.per == "sample" else right

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
                nq = qs[i + 1].detach()
                last = i + 1 == self.max_steps - 1  # the next step must halt: Q_halt only
                nxt = torch.sigmoid(nq[..., 0] if last else nq.max(-1).values)
                mc = ran[i + 1].to(q.dtype)
                bce = F.binary_cross_entropy_with_logits(q[..., 1], nxt, reduction="none")
                cont_l = cont_l + (bce * mc).sum()
                n_cont += float(mc.sum())
        return 0.5 * (halt_l / max(n_halt, 1.0) + cont_l / max(n_cont, 1.0))
