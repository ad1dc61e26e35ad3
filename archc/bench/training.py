"""Training benchmark: `archc train` against hand-written PyTorch training loops.

Run: ``python -m archc.bench.training [--quick] [--steps N] [--data FILE]``.

For a GPT and an LSTM language model on a byte-level text file (default: the
tinyshakespeare corpus next to the repository), the archc Trainer (the loop behind
`archc train`: AdamW, warm-up + cosine, clipping, metrics, checkpoints) and a plain
hand-written loop with the same hyper-parameters and the same initial weights train
in turns in one process. Reported: training tokens/s of each (evaluation excluded),
their ratio archc / hand-written, and the validation bits per byte each reaches after
the same number of steps, measured on the same held-out windows. Not a test: nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from archc.api import load
from archc.bench.references import GPT_SPEC, LSTM_SPEC, HandGPT, HandLSTM, copy_by_position
from archc.frontend.schema import Spec
from archc.runtime.optim import lr_factor
from archc.runtime.tasks import IGNORE, Task
from archc.runtime.train import Trainer

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@dataclass
class Result:
    tokens_per_s: float
    bpb: float


def spec_for(model_text: str, data: Path, steps: int, batch: int, seq: int, lr: float) -> Spec:
    return load(
        model_text,
        [
            "train.task=text",
            f"train.data={data}",
            f"train.steps={steps}",
            f"train.batch_size={batch}",
            f"train.seq_len={seq}",
            f"train.lr={lr}",
            "train.warmup=20",
            "train.eval_interval=0",
            "train.checkpoint_interval=0",
            "train.log_interval=50",
        ],
    )


@torch.no_grad()
def bits_per_byte(model: nn.Module, task: Task, batch: int, count: int) -> float:
    """Mean next-byte loss in bits over fixed held-out windows (the same for every model)."""
    model.eval()
    total, n = 0.0, 0
    for b in task.eval_batches(batch, count, seed=0):
        logits = model(b.inputs)
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                b.targets.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
        )
        n += int((b.targets != IGNORE).sum())
    model.train()
    return total / n / math.log(2)


def hand_loop(model: nn.Module, spec: Spec, data: torch.Tensor) -> float:
    """A plain training loop with the spec's hyper-parameters; returns training seconds."""
    cfg = spec.train
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(cfg.seq_len + 1)
    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size, 1), generator=gen)
        window = data[starts + offsets].long()
        x, y = window[:, :-1], window[:, 1:]
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        opt.step()
        sched.step()
        loss.item()  # a real loop looks at its loss every step (and archc checks it)
    return time.perf_counter() - t0


def race(name: str, spec: Spec, hand: nn.Module, reps: int, eval_batches: int) -> None:
    """Alternate archc and hand-written runs from the same initial weights."""
    cfg = spec.train
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    init: dict[str, torch.Tensor] = {}
    archc_tps, hand_tps = [], []
    archc_bpb = hand_bpb = float("nan")
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(spec, Path(tmp) / "run", show_progress=False)
            if rep == 0:
                copy_by_position(trainer.model, hand)
                init = {k: v.clone() for k, v in hand.state_dict().items()}
            summary = trainer.run()
            archc_tps.append(summary.tokens_per_s)
            if rep == 0:
                archc_bpb = bits_per_byte(trainer.model, trainer.task, cfg.batch_size, eval_batches)
            train_bytes = trainer.task.train_bytes  # type: ignore[attr-defined]
            task = trainer.task
        hand.load_state_dict(init)
        secs = hand_loop(hand, spec, train_bytes)
        hand_tps.append(tokens / secs)
        if rep == 0:
            hand_bpb = bits_per_byte(hand, task, cfg.batch_size, eval_batches)
    a, h = statistics.median(archc_tps), statistics.median(hand_tps)
    print(
        f"{name}: archc {a:,.0f} tok/s, hand-written {h:,.0f} tok/s, ratio {a / h:.3f}; "
        f"val bits/byte after {cfg.steps} steps: archc {archc_bpb:.3f}, "
        f"hand-written {hand_bpb:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    ap.add_argument("--steps", type=int, help="training steps per run")
    ap.add_argument("--reps", type=int, help="alternated runs per side")
    ap.add_argument("--data", type=Path, default=CORPUS, help="text file")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"no text file at {args.data}; pass --data FILE")
    steps = args.steps or (60 if args.quick else 200)
    reps = args.reps or (1 if args.quick else 3)
    batch, seq = 16, 128
    print(f"data {args.data.name}, B={batch} T={seq}, {steps} steps, {reps} run(s) per side")
    gpt = spec_for(GPT_SPEC.format(d=128, heads=4, n=4), args.data, steps, batch, seq, 1e-3)
    race("GPT  d=128 L=4", gpt, HandGPT(256, 128, 4, 4), reps, eval_batches=16)
    lstm = spec_for(LSTM_SPEC.format(d=128, h=256), args.data, steps, batch, seq, 3e-3)
    race("LSTM d=128 h=256 x2", lstm, HandLSTM(256, 128, 256), reps, eval_batches=16)
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
