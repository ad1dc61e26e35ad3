"""halt (adaptive depth, HRM's ACT) against hand-written references: per-sample and
per-position halting masks of the delta criterion, the Q-head's halting decisions and
Q-learning loss, the reported steps, and causality of per-position halting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import archc

D = 4


def _spec(halt: str, body: str = "[{act: tanh}]") -> str:
    return f"model: t\nd_model: {D}\nlayers:\n  - halt: {{{halt}, body: {body}}}\n"


def test_delta_masks_per_sample_hand_computed() -> None:
    """z <- tanh(z) changes z by about |z|^2 / 3 relative: a small sample halts after
    one step, a large one runs to max_steps; halted samples keep their state."""
    model = archc.compile(_spec("max_steps: 4, criterion: delta, threshold: 0.05, per: sample"))
    scale = torch.tensor([0.1, 0.5, 3.0])[:, None, None]
    x = scale * torch.ones(3, 2, D)
    # By hand: |tanh(0.1) - 0.1| / 0.1 = 0.0033 < 0.05 -> 1 step. For 0.5: 0.076, then
    # tanh(0.462) = 0.432 (0.065), tanh(0.432) = 0.407 (0.058), 4th step = max -> 4.
    # For 3: 0.67, 0.24, ... -> 4 (max_steps).
    steps = []
    for s in (0.1, 0.5, 3.0):
        z, n = s, 0
        for i in range(4):
            new = math.tanh(z)
            n += 1
            halt = abs(new - z) / abs(z) < 0.05
            z = new
            if halt or i + 1 == 4:
                break
        steps.append((n, z))
    assert [n for n, _ in steps] == [1, 4, 4]
    y = model(x)
    for b, (_, z) in enumerate(steps):
        torch.testing.assert_close(y[b], torch.full((2, D), z), rtol=1e-6, atol=1e-7)
    assert model.stats()["layers.0.halt.steps"] == pytest.approx(sum(n for n, _ in steps) / 3)


def test_delta_masks_per_token() -> None:
    model = archc.compile(_spec("max_steps: 3, criterion: delta, threshold: 0.05"))
    x = torch.tensor([0.1, 3.0, 0.5, 0.01])[None, :, None].expand(1, 4, D).contiguous()
    y = model(x)
    # Position by position (the body is pointwise): 0.1 -> 1 step, 3.0 -> 3 (max),
    # 0.5 -> 3 (0.076, 0.065, max), 0.01 -> 1.
    ref = []
    for s, n in ((0.1, 1), (3.0, 3), (0.5, 3), (0.01, 1)):
        for _ in range(n):
            s = math.tanh(s)
        ref.append(s)
    torch.testing.assert_close(y[0, :, 0], torch.tensor(ref), rtol=1e-6, atol=1e-7)
    assert model.stats()["layers.0.halt.steps"] == pytest.approx((1 + 3 + 3 + 1) / 4)


def test_q_head_decisions_and_loss_equal_reference() -> None:
    """Per-sample Q-head on the mean-pooled state, no exploration, label-free target:
    halting where Q_halt > Q_continue; loss = 0.5 (BCE(Q_halt, [delta < eps]) +
    BCE(Q_cont, sigmoid(max Q of the next step, or its Q_halt if it is the last)))."""
    spec = _spec(
        "max_steps: 3, criterion: q-head, explore: 0.0, threshold: 0.1, per: sample, "
        "target: converged"
    )
    model = archc.compile(spec).train()
    p = dict(model.named_parameters())
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.3]])
    bias = torch.tensor([0.1, -0.2])
    with torch.no_grad():
        p["layers.0.halt.q.weight"].copy_(w)
        p["layers.0.halt.q.bias"].copy_(bias)
    x = torch.randn(5, 3, D, generator=torch.Generator().manual_seed(0))
    y = model(x)
    loss = model.aux_loss()
    wd, bd = w.double(), bias.double()
    halt_l, cont_l, nh, nc = 0.0, 0.0, 0, 0
    total_steps = 0
    for b in range(5):
        z = x[b].double()
        qs, targets = [], []
        for i in range(3):
            new = torch.tanh(z)
            delta = float((new - z).norm() / z.norm())
            q = new.mean(0) @ wd.T + bd
            qs.append(q)
            targets.append(float(delta < 0.1))
            z = new
            if q[0] > q[1] or i + 1 == 3:
                break
        total_steps += len(qs)
        torch.testing.assert_close(y[b].double(), z, rtol=1e-5, atol=1e-6)
        for i, q in enumerate(qs):
            halt_l += float(
                F.binary_cross_entropy_with_logits(q[0], torch.tensor(targets[i]).double())
            )
            nh += 1
            if i + 1 < len(qs):  # the last step (2) must halt: its Q_halt alone
                nxt = torch.sigmoid(qs[i + 1][0] if i + 1 == 2 else qs[i + 1].max())
                cont_l += float(F.binary_cross_entropy_with_logits(q[1], nxt))
                nc += 1
    expected = 0.5 * (halt_l / nh + cont_l / max(nc, 1))
    assert loss is not None and abs(float(loss.detach()) - expected) < 1e-5
    assert model.stats()["layers.0.halt.steps"] == pytest.approx(total_steps / 5)
    loss.backward()
    assert p["layers.0.halt.q.weight"].grad.abs().sum() > 0


def test_exploration_forces_extra_steps() -> None:
    """explore: 1 gives every sample a random minimum of 2..max_steps steps, so a model
    that would halt after one step runs at least two in training, one in eval."""
    spec = _spec("max_steps: 4, criterion: q-head, explore: 1.0, per: sample")
    model = archc.compile(spec)
    with torch.no_grad():  # Q_halt > Q_continue everywhere: halt after the first step
        dict(model.named_parameters())["layers.0.halt.q.bias"].copy_(torch.tensor([1.0, 0.0]))
    x = 0.1 * torch.ones(64, 2, D)
    torch.manual_seed(0)
    model.train()(x)
    steps = model.stats()["layers.0.halt.steps"]
    assert 2.0 <= steps <= 4.0 and steps != 2.0
    model.eval()(x)
    assert model.stats()["layers.0.halt.steps"] == 1.0


CAUSAL = """
model: c
vocab: 13
d_model: 16
layers:
  - embed
  - halt: {max_steps: 3, criterion: q-head, explore: 0.0, body: [
      {residual: [{norm: rms}, {attention: {heads: 2}}]}]}
  - head
"""


def test_per_token_halting_is_causal() -> None:
    model = archc.compile(CAUSAL, seed=0).eval()
    with torch.no_grad():
        q = dict(model.named_parameters())["layers.1.halt.q.weight"]
        q.copy_(torch.randn(q.shape, generator=torch.Generator().manual_seed(0)))
        ids = torch.randint(0, 13, (3, 10), generator=torch.Generator().manual_seed(0))
        y = model(ids)
        assert 1.0 < model.stats()["layers.1.halt.steps"] < 3.0  # halting does vary
        for t in (0, 5, 9):
            other = ids.clone()
            other[:, t] = (other[:, t] + 1) % 13
            y2 = model(other)
            torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=1e-6)


def test_per_token_halting_runs_incrementally() -> None:
    """Chunk by chunk (each step keeps its own KV cache; the Q-head's causal pooling
    carries its prefix sums) equals the full forward, with halting that varies."""
    model = archc.compile(CAUSAL, seed=0).double().eval()
    with torch.no_grad():
        q = dict(model.named_parameters())["layers.1.halt.q.weight"]
        q.copy_(torch.randn(q.shape, generator=torch.Generator().manual_seed(0)))
        ids = torch.randint(0, 13, (3, 10), generator=torch.Generator().manual_seed(0))
        full = model(ids)
        assert 1.0 < model.stats()["layers.1.halt.steps"] < 3.0
        a, state = model(ids[:, :4], return_state=True)
        b, state = model(ids[:, 4:7], state=state, return_state=True)
        c = model(ids[:, 7:], state=state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-9, atol=1e-9)


def test_per_sample_halting_refuses_incremental_runs() -> None:
    model = archc.compile(CAUSAL.replace("explore: 0.0,", "explore: 0.0, per: sample,"))
    ok, why = model.incremental_support()
    assert not ok and "halt per sample" in why
