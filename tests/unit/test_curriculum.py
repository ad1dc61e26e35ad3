"""Curricula (single- and multi-head) and the evaluation loop, against plain-Python oracles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archc.frontend.train import Curriculum
from archc.runtime.curriculum import CurriculumState
from archc.runtime.objective import correct_count, evaluate, loss_sum
from archc.runtime.tasks import IGNORE, Batch, Task, make_task

SEQ = 12


def parity_oracle(inputs: torch.Tensor, n: int) -> list[list[int]]:
    """Target at t: parity of bits t-n+1..t, or IGNORE for t < n - 1 (a Python loop)."""
    rows = []
    for row in inputs.tolist():
        rows.append(
            [sum(row[t - n + 1 : t + 1]) % 2 if t >= n - 1 else IGNORE for t in range(len(row))]
        )
    return rows


def parity(n: int = 3) -> Task:
    return make_task("parity", {"n": n}, SEQ)


def curriculum(**kw: object) -> Curriculum:
    fields: dict[str, object] = {"param": "n", "start": 1, "end": 4, "every": 5}
    return Curriculum.model_validate({**fields, **kw})


# --- levels and targets ---------------------------------------------------------------------


def test_no_curriculum_is_the_base_task() -> None:
    base = parity(3)
    state = CurriculumState(None, base)
    assert state.task() is base and state.heads == 1 and state.value is None
    batch = base.batch("train", 0, 4, seed=0)
    assert torch.equal(state.targets(batch), batch.targets)
    assert not state.advance_after_step(10) and not state.advance_after_eval(1.0)


def test_single_head_targets_follow_the_level() -> None:
    state = CurriculumState(curriculum(start=2, end=4, every=3), parity(3))
    assert state.heads == 1
    for want in (2, 3, 4):
        assert state.value == want
        task = state.task()
        assert task.params.n == want  # type: ignore[attr-defined]
        batch = task.batch("train", 7, 5, seed=1)
        targets = state.targets(batch)
        assert torch.equal(targets, batch.targets)
        assert targets.tolist() == parity_oracle(batch.inputs, want)
        state.advance_after_step(3 * want)


def test_advance_every_k_steps_and_stop_at_the_end() -> None:
    state = CurriculumState(curriculum(start=1, end=3, every=4), parity())
    moved = [step for step in range(1, 20) if state.advance_after_step(step)]
    assert moved == [4, 8]  # 1 -> 2 at step 4, 2 -> 3 at step 8, then it stays
    assert state.value == 3 and state.level == 2
    assert not state.advance_after_eval(1.0)  # a step curriculum ignores accuracy


def test_advance_at_accuracy_threshold() -> None:
    state = CurriculumState(
        curriculum(start=5, end=1, step=-2, every=None, advance_at=0.9), parity()
    )
    assert state.values == [5, 3, 1]
    assert not state.advance_after_eval(0.89)
    assert not state.advance_after_step(100)  # an accuracy curriculum ignores steps
    assert state.value == 5
    assert state.advance_after_eval(0.9)  # reaching the threshold is enough
    assert state.value == 3
    assert state.advance_after_eval(1.0) and state.value == 1
    assert not state.advance_after_eval(1.0) and state.value == 1


def test_state_dict_restores_level() -> None:
    state = CurriculumState(curriculum(start=1, end=4, every=1), parity())
    state.advance_after_step(1)
    state.advance_after_step(2)
    again = CurriculumState(curriculum(start=1, end=4, every=1), parity())
    again.load_state_dict(state.state_dict())
    assert again.value == 3 and again.task().params.n == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", [0, 1, 3])
def test_multi_head_targets(level: int) -> None:
    cfg = curriculum(start=1, end=4, mode="multi", every=1)
    state = CurriculumState(cfg, parity(3))
    assert state.heads == 4
    for step in range(1, level + 1):
        assert state.advance_after_step(step)
    assert state.level == level
    batch = state.task().batch("train", 3, 6, seed=2)
    targets = state.targets(batch)
    assert targets.shape == (6, SEQ, 4)
    for j, n in enumerate([1, 2, 3, 4]):
        head = targets[..., j]
        if j <= level:
            assert head.tolist() == parity_oracle(batch.inputs, n), (j, n)
        else:
            assert bool((head == IGNORE).all()), (j, n)


# --- objective ------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """Returns the next of a list of precomputed logits, whatever the input (B, T)."""

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.logits = logits
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.calls]
        assert out.shape[:2] == x.shape
        self.calls += 1
        return out


def hand_metrics(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over supervised positions, counted one by one."""
    loss, right, total = 0.0, 0, 0
    for lg, tg in zip(logits, targets, strict=True):
        flat_lg, flat_tg = lg.reshape(-1, lg.shape[-1]), tg.reshape(-1)
        for i in range(flat_tg.numel()):
            t = int(flat_tg[i])
            if t == IGNORE:
                continue
            loss += float(F.cross_entropy(flat_lg[i : i + 1].double(), flat_tg[i : i + 1]))
            right += int(int(flat_lg[i].argmax()) == t)
            total += 1
    return loss / total, right / total


def random_logits(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) * 2 for s in shapes]


def test_loss_sum_and_correct_count() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]])
    targets = torch.tensor([[0, 0, IGNORE]])
    want = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))
    assert float(loss_sum(logits, targets)) == pytest.approx(want)
    assert int(correct_count(logits, targets)) == 1


def test_evaluate_single_head() -> None:
    task = parity(3)
    state = CurriculumState(None, task)
    batches = list(task.eval_batches(4, 3, seed=0))
    logits = random_logits([(4, SEQ, 2)] * 3)
    model = FixedLogits(logits)
    model.train()
    out = evaluate(model, state, batches, torch.device("cpu"))
    loss, acc = hand_metrics(logits, [b.targets for b in batches])
    assert set(out) == {"loss", "accuracy"}
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    assert out["accuracy"] == pytest.approx(acc)
    assert model.training  # the mode is restored


def test_evaluate_text_reports_bits_per_byte(tmp_path: Path) -> None:
    data = tmp_path / "corpus.txt"
    data.write_bytes(bytes(range(32, 127)) * 10)
    task = make_task("text", None, 8, data)
    state = CurriculumState(None, task)
    batches = list(task.eval_batches(3, 2, seed=0))
    logits = random_logits([(*b.inputs.shape, 256) for b in batches], seed=1)
    out = evaluate(FixedLogits(logits), state, batches, torch.device("cpu"))
    loss, acc = hand_metrics(logits, [b.targets for b in batches])
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["bpb"] == pytest.approx(loss / math.log(2), rel=1e-5)


def test_evaluate_multi_head_reports_each_head_and_the_minimum() -> None:
    cfg = curriculum(start=1, end=3, mode="multi", every=1)
    state = CurriculumState(cfg, parity(3))
    state.advance_after_step(1)  # heads n=1 and n=2 trained, n=3 masked
    batches = [state.task().batch("eval", i, 4, seed=0) for i in range(2)]
    gen = torch.Generator().manual_seed(3)
    logits = []
    for b in batches:
        lg = torch.randn(4, SEQ, 3, 2, generator=gen)
        # Head 0 is always right, so the per-head accuracies differ.
        right = torch.tensor(parity_oracle(b.inputs, 1))
        lg[..., 0, :] = F.one_hot(right.clamp(min=0), 2).float() * 10
        logits.append(lg.reshape(4, SEQ, 6))  # the model's flat (B, T, K * C) output
    out = evaluate(FixedLogits(logits), state, batches, torch.device("cpu"))
    per_head = [[lg.view(4, SEQ, 3, 2)[..., j, :] for lg in logits] for j in range(2)]
    targets = [[torch.tensor(parity_oracle(b.inputs, n)) for b in batches] for n in (1, 2)]
    acc = [hand_metrics(per_head[j], targets[j])[1] for j in range(2)]
    assert acc[0] == 1.0 and acc[1] < 1.0
    assert out["accuracy_n1"] == pytest.approx(acc[0])
    assert out["accuracy_n2"] == pytest.approx(acc[1])
    assert "accuracy_n3" not in out
    assert out["accuracy"] == pytest.approx(min(acc))
    # The loss averages over every supervised (position, head) pair of both heads.
    all_logits = [lg for j in range(2) for lg in per_head[j]]
    all_targets = [t for j in range(2) for t in targets[j]]
    assert out["loss"] == pytest.approx(hand_metrics(all_logits, all_targets)[0], rel=1e-5)
    assert "bpb" not in out


def test_evaluate_counts_nothing_on_fully_masked_batches() -> None:
    task = parity(3)
    batch = task.batch("eval", 0, 2, seed=0)
    masked = Batch(batch.inputs, torch.full_like(batch.targets, IGNORE))
    out = evaluate(
        FixedLogits(random_logits([(2, SEQ, 2)])),
        CurriculumState(None, task),
        [masked],
        torch.device("cpu"),
    )
    assert out == {"loss": 0.0, "accuracy": 0.0}
