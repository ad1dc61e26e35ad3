"""`archc train`: the training loop of a compiled spec on a built-in task.

Batches are pure functions of (seed, step) (see runtime/tasks), so a checkpoint needs
only the step as its data position; with the model, optimizer, scheduler, curriculum,
gradient-noise and torch RNG states restored, a resumed run computes the same losses
as an uninterrupted one. Under torchrun each rank takes its rows of the same global
batch and the loss is normalised by the global count of supervised positions, so N
processes compute the same update as one process with the whole batch.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archc import knobs
from archc.api import compile as compile_spec
from archc.diagnostics import error
from archc.frontend.schema import Spec
from archc.runtime import checkpoint as ckpt
from archc.runtime import distributed as dist
from archc.runtime.objective import evaluate, loss_sum, per_head_logits, supervision
from archc.runtime.optim import GradientNoise, make_optimizer, make_scheduler
from archc.runtime.prepare import build_curriculum, build_task, check_model_fits, spec_error
from archc.runtime.progress import MetricsLog, Progress
from archc.runtime.rundir import METRICS, SPEC, SUMMARY, resolved_spec_text
from archc.runtime.tasks import IGNORE

CHECKPOINT_FORMAT = 1


@dataclass
class RunSummary:
    """How a run ended."""

    run_dir: str
    model: str
    steps: int
    loss: float
    eval: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    resumed_from: int | None = None

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        ev = self.eval
        parts = [f"{self.model}: {self.steps} steps in {self.seconds:.1f} s"]
        parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        parts.append(f"train loss {self.loss:.4f}")
        if ev:
            text = f"eval loss {ev['loss']:.4f}, accuracy {ev['accuracy']:.3f}"
            if "bpb" in ev:
                text += f", {ev['bpb']:.3f} bits/byte"
            parts.append(text)
        return "; ".join(parts) + f" -> {self.run_dir}"


def autocast_for(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA ("auto"), float32 on CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class Trainer:
    """One training run of `spec` writing into `run_dir`."""

    def __init__(self, spec: Spec, run_dir: Path, show_progress: bool = True) -> None:
        self.spec, self.cfg, self.run_dir = spec, spec.train, run_dir
        self.world = dist.setup(self.cfg.device)
        torch.manual_seed(self.cfg.seed)  # dropout draws from the global stream
        self.nan_at = knobs.inject_nan_at_step()  # read once, not every step
        self.stats: dict[str, float] = {}
        self.task = build_task(spec)
        self.curriculum = build_curriculum(spec, self.task)
        self.model = compile_spec(
            spec, seed=self.cfg.seed, device=self.world.device.type, seq_len=self.cfg.seq_len
        )
        check_model_fits(spec, self.model.graph, self.task, self.curriculum.heads)
        if self.cfg.batch_size % self.world.size:
            raise spec_error(
                spec,
                "train.batch_size",
                f"batch_size {self.cfg.batch_size} does not split over {self.world.size} processes",
                hint="use a multiple of --nproc_per_node",
            )
        self.model.to(self.world.device)
        self.net: nn.Module = self.model
        if self.world.distributed:
            ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.model, self.model.graph, self.cfg)
        self.sched = make_scheduler(self.opt, self.cfg)
        self.noise = (
            GradientNoise(self.cfg.grad_noise, self.cfg.seed) if self.cfg.grad_noise else None
        )
        self.autocast = autocast_for(self.cfg.precision, self.world.device)
        self.metrics = MetricsLog(run_dir / METRICS)
        main = self.world.is_main
        self.progress = Progress(
            self.cfg.steps, self.cfg.log_interval, enabled=show_progress and main
        )
        self.step = 0
        self.tokens = 0
        self.seconds = 0.0  # time spent in training steps, over all sessions of the run
        self.last_eval: dict[str, float] = {}
        self.checkpoint_step: int | None = None

    # -- state -------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.world.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.world.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "model_hash": self.model.spec_hash,
            "step": self.step,  # batches are a function of the step: the data position
            "tokens": self.tokens,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "curriculum": self.curriculum.state_dict(),
            "noise": self.noise.state_dict() if self.noise else None,
            "rng": rng,
            "last_eval": self.last_eval,
        }

    def save(self) -> None:
        if self.world.is_main:
            ckpt.save_atomic(self._payload(), self.run_dir / ckpt.CHECKPOINT)
        self.checkpoint_step = self.step
        dist.barrier(self.world)

    def restore(self, path: Path) -> None:
        state = ckpt.load(path, self.world.device)
        if state.get("model_hash") != self.model.spec_hash:
            raise error(
                f"{self.run_dir} was trained with a different model; it cannot be resumed "
                "with this spec",
                hint="resume with the run's own spec.yaml, or choose another --out",
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.curriculum.load_state_dict(state["curriculum"])
        if self.noise and state["noise"]:
            self.noise.load_state_dict(state["noise"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.world.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.world.device)
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.seconds = float(state["seconds"])
        self.last_eval = dict(state["last_eval"])
        self.checkpoint_step = self.step

    # -- the loop ------------------------------------------------------------------------

    def prepare_dir(self, resume: bool) -> int | None:
        """Create or reopen the run directory; returns the step resumed from."""
        path = self.run_dir / ckpt.CHECKPOINT
        if path.exists() and not resume:
            raise error(
                f"{self.run_dir} already holds a run",
                hint="pass --resume to continue it, or choose another --out",
            )
        resumed = None
        if path.exists():
            self.restore(path)
            resumed = self.step
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / SPEC).write_text(resolved_spec_text(self.spec))
            if resumed is None:
                self.metrics.path.write_text("")
            else:
                self.metrics.truncate_after(resumed)
        dist.barrier(self.world)
        return resumed

    def train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (global mean loss, gradient norm)."""
        cfg, world = self.cfg, self.world
        task = self.curriculum.task()
        batch = task.batch("train", self.step, cfg.batch_size, cfg.seed)
        targets = self.curriculum.targets(batch)
        count = int((targets != IGNORE).sum())  # over the global batch: same on every rank
        rows = slice(
            world.rank * len(targets) // world.size, (world.rank + 1) * len(targets) // world.size
        )
        inputs = batch.inputs[rows].to(world.device, non_blocking=True)
        targets = targets[rows].to(world.device, non_blocking=True)
        # Step-scheduled model changes (depth up-scaling): every rank makes the same one.
        self.model.begin_step(self.step)
        with self.autocast:
            logits = self.net(inputs)
        total = loss_sum(per_head_logits(logits, self.curriculum.heads), targets)
        # DDP averages gradients over ranks: scale so the average is d(sum / count).
        loss = total * (world.size / max(1, count))
        # Weighted auxiliary losses of this forward, if any; the supervised ones (HRM
        # deep supervision, a Q-head's answer-correctness target) score against targets.
        sup = supervision(targets, self.curriculum.heads, world.size / max(1, count))
        aux = self.model.aux_loss(sup)
        if aux is not None:
            loss = loss + aux
        self.stats = {"aux_loss": float(aux.detach())} if aux is not None else {}
        self.stats.update(self.model.stats())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        value = dist.all_sum(total.detach().clone(), world) / max(1, count)
        if self.step == self.nan_at:
            value = value * float("nan")
        mean = float(value)
        if not math.isfinite(mean):
            return mean, float("nan")
        if self.noise is not None:
            self.noise.apply(self.params, self.step)
        clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if math.isfinite(norm):
            self.opt.step()
        self.sched.step()
        self.tokens += cfg.batch_size * cfg.seq_len
        return mean, norm

    def run_eval(self) -> dict[str, float]:
        cfg = self.cfg
        batches = self.curriculum.task().eval_batches(cfg.batch_size, cfg.eval_batches, cfg.seed)
        self.last_eval = evaluate(
            self.model, self.curriculum, batches, self.world.device, self.autocast
        )
        return self.last_eval

    def diverged(self, what: str, value: float) -> None:
        kept = (
            f"the last good checkpoint (step {self.checkpoint_step}) is kept in "
            f"{self.run_dir / ckpt.CHECKPOINT}"
            if self.checkpoint_step is not None
            else "no checkpoint had been written yet"
        )
        self.progress.message(f"stopped: {what} is {value} at step {self.step}")
        raise spec_error(
            self.spec,
            "train.lr",
            f"training diverged: {what} is {value} at step {self.step}; {kept}",
            hint="lower train.lr, add warmup, or set train.grad_clip",
        )

    def run(self, resume: bool = False) -> RunSummary:
        cfg = self.cfg
        resumed = self.prepare_dir(resume)
        if resumed is not None:
            self.progress.message(f"resuming {self.run_dir} from step {resumed}")
        self.net.train()
        loss = float("nan")
        # Throughput counts training steps only: evaluations and checkpoint writes are
        # timed out, so tokens/s compares with a bare training loop.
        window_tokens, window_seconds = 0, 0.0
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            loss, norm = self.train_step()
            if not math.isfinite(loss):
                self.diverged("the loss", loss)
            if not math.isfinite(norm):
                self.diverged("the gradient norm", norm)
            lr = self.opt.param_groups[0]["lr"]
            self.step += 1
            spent = time.perf_counter() - t0
            self.seconds += spent
            window_seconds += spent
            window_tokens += cfg.batch_size * cfg.seq_len
            row: dict[str, Any] = {}
            if self.step % cfg.log_interval == 0 or self.step == cfg.steps:
                row = {
                    "step": self.step,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": window_tokens / max(1e-9, window_seconds),
                    "grad_norm": norm,
                    **self.stats,  # auxiliary losses and module statistics, if any
                }
                window_tokens, window_seconds = 0, 0.0
            if self.curriculum.advance_after_step(self.step):
                row.update(step=self.step, level=self.curriculum.value)
            eval_due = cfg.eval_interval and self.step % cfg.eval_interval == 0
            if eval_due or self.step == cfg.steps:
                metrics = self.run_eval()
                row.update({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()}})
                if self.curriculum.advance_after_eval(metrics["accuracy"]):
                    row["level"] = self.curriculum.value
            if row and self.world.is_main:
                self.metrics.write(row)
            self.progress.update(self.step, self._fields(loss))
            if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0:
                self.save()
        if self.checkpoint_step != self.step:
            self.save()
        self.progress.close()
        summary = RunSummary(
            run_dir=str(self.run_dir),
            model=self.spec.model,
            steps=self.step,
            loss=loss,
            eval=self.last_eval,
            tokens_per_s=self.tokens / max(1e-9, self.seconds),
            seconds=self.seconds,
            resumed_from=resumed,
        )
        if self.world.is_main:
            (self.run_dir / SUMMARY).write_text(json.dumps(asdict(summary), indent=2) + "\n")
        return summary

    def _fields(self, loss: float) -> dict[str, str]:
        out = {"loss": f"{loss:.4f}", "lr": f"{self.opt.param_groups[0]['lr']:.2e}"}
        if self.last_eval:
            out["eval acc"] = f"{self.last_eval['accuracy']:.3f}"
        if self.curriculum.value is not None:
            out[self.curriculum.cfg.param] = str(self.curriculum.value)  # type: ignore[union-attr]
        return out


def train(
    spec: Spec, run_dir: str | Path, resume: bool = False, show_progress: bool = True
) -> RunSummary:
    """Train `spec` (its `train:` section) into `run_dir`; see `Trainer`."""
    trainer = Trainer(spec, Path(run_dir), show_progress)
    try:
        return trainer.run(resume)
    finally:
        dist.teardown(trainer.world)
