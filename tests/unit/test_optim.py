"""Learning-rate schedule, weight-decay groups and gradient noise against hand oracles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import archc.api
from archc.frontend.train import GradNoise, TrainConfig
from archc.runtime.checkpoint import load, save_atomic
from archc.runtime.optim import (
    GradientNoise,
    decay_flags,
    lr_factor,
    make_optimizer,
    make_scheduler,
    param_groups,
)

# --- lr_factor ------------------------------------------------------------------------------


def cosine(step: int, steps: int, warmup: int, floor: float) -> float:
    """Hand-written reference: linear warm-up to 1, then half a cosine from 1 to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(step - warmup, steps - warmup) / (steps - warmup)
    return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2


def test_lr_factor_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=110, warmup=10, min_lr_ratio=0.1)
    # Known values: the warm-up ramp ends at exactly 1, the cosine is half-way at step 60.
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(4, cfg) == pytest.approx(0.5)
    assert lr_factor(9, cfg) == pytest.approx(1.0)  # warmup - 1
    assert lr_factor(10, cfg) == pytest.approx(1.0)  # warmup: the cosine starts at its top
    assert lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) == pytest.approx(0.1)  # past the end: stays at the floor
    for step in (0, 1, 9, 10, 11, 35, 60, 85, 108, 109, 110):
        assert lr_factor(step, cfg) == pytest.approx(cosine(step, 110, 10, 0.1)), step
    # The last optimizer step (109) is just above the floor.
    assert 0.1 < lr_factor(109, cfg) < 0.1 + 1e-3


def test_lr_factor_no_warmup_and_zero_floor() -> None:
    cfg = TrainConfig(steps=100, warmup=0, min_lr_ratio=0.0)
    assert lr_factor(0, cfg) == pytest.approx(1.0)
    assert lr_factor(50, cfg) == pytest.approx(0.5)
    assert lr_factor(25, cfg) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)
    assert all(lr_factor(s, cfg) >= lr_factor(s + 1, cfg) for s in range(100))


def test_lr_factor_constant() -> None:
    cfg = TrainConfig(steps=50, warmup=4, schedule="constant")
    assert [lr_factor(s, cfg) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert lr_factor(49, cfg) == 1.0 and lr_factor(1000, cfg) == 1.0
    assert lr_factor(0, TrainConfig(schedule="constant")) == 1.0


def test_scheduler_applies_factor_before_each_step() -> None:
    """The lr used by optimizer step i (0-based) is lr * lr_factor(i)."""
    cfg = TrainConfig(steps=20, warmup=5, lr=0.5, min_lr_ratio=0.2)
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=cfg.lr)
    sched = make_scheduler(opt, cfg)
    for i in range(22):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * cosine(i, 20, 5, 0.2)), i
        opt.step()
        sched.step()


# --- weight decay groups --------------------------------------------------------------------

SPEC = """\
model: decay
vocab: 32
d_model: 16
layers:
  - embed
  - posenc: learned
  - residual: [{norm: layer}, {attention: {heads: 2, bias: true}}]
  - residual: [{norm: rms}, {mlp: {mult: 2}}]
  - conv1d: {kernel: 3}
  - lstm: {hidden: 16, layers: 2}
  - norm: layer
  - head: {bias: true}
"""

NO_DECAY_MODULES = ("embed", "posenc", "norm")


def expected_decay(name: str) -> bool:
    """The rule, by name: no decay for embeddings, positions, norms and every bias."""
    parts = name.split(".")
    if parts[-1] == "bias" or parts[-1].startswith("bias_"):
        return False
    return not any(m in parts for m in NO_DECAY_MODULES)


def grouped(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    """Names of the parameters in the decayed and the not-decayed group."""
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay: dict[bool, set[str]] = {True: set(), False: set()}
    for g in groups:
        by_decay[g["weight_decay"] > 0].update(names[id(p)] for p in g["params"])
    return by_decay[True], by_decay[False]


def test_param_groups_by_name() -> None:
    model = archc.api.compile(SPEC)
    graph = archc.api.to_graph(model.spec)
    decay, no_decay = grouped(model, param_groups(model, graph, 0.1))
    names = [n for n, _ in model.named_parameters()]
    assert decay | no_decay == set(names) and not decay & no_decay
    assert sum(len(g["params"]) for g in param_groups(model, graph, 0.1)) == len(names)
    assert decay == {n for n in names if expected_decay(n)}
    assert no_decay == {n for n in names if not expected_decay(n)}
    # Spot checks, so the rule above cannot be vacuous.
    assert {
        "layers.0.embed.weight",
        "layers.1.posenc.weight",
        "layers.2.residual.0.norm.weight",
        "layers.2.residual.0.norm.bias",
        "layers.2.residual.1.attention.q.bias",
        "layers.5.lstm.bias_hh_l1",
        "layers.7.head.bias",
    } <= no_decay
    assert {
        "layers.2.residual.1.attention.o.weight",
        "layers.3.residual.1.mlp.up.weight",
        "layers.4.conv1d.weight",
        "layers.5.lstm.weight_ih_l0",
        "layers.5.lstm.weight_hh_l1",
        "layers.7.head.weight",
    } <= decay
    # Every parameter is known to the IR (none falls back to the ndim guess).
    assert set(decay_flags(graph)) == set(names)


def test_tied_head_weight_counted_once() -> None:
    spec = SPEC.replace("lstm: {hidden: 16, layers: 2}", "lstm: {hidden: 16}").replace(
        "head: {bias: true}", "head: {tied: true}"
    )
    model = archc.api.compile(spec)
    graph = archc.api.to_graph(model.spec)
    groups = param_groups(model, graph, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    embed = dict(model.named_parameters())["layers.0.embed.weight"]
    assert sum(p is embed for g in groups for p in g["params"]) == 1
    _, no_decay = grouped(model, groups)
    assert "layers.0.embed.weight" in no_decay


def test_make_optimizer_uses_config() -> None:
    model = archc.api.compile(SPEC)
    cfg = TrainConfig(lr=2e-3, betas=(0.8, 0.9), eps=1e-7, weight_decay=0.05)
    opt = make_optimizer(model, model.graph, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    for g in opt.param_groups:
        assert (g["lr"], g["betas"], g["eps"]) == (2e-3, (0.8, 0.9), 1e-7)


# --- gradient noise -------------------------------------------------------------------------

N = 400_000  # elements: the sample variance is within ~0.5% (one sigma) of the truth


def noise_sample(noise: GradientNoise, step: int, n: int = N) -> torch.Tensor:
    """The noise added to a zero gradient of `n` elements at `step`."""
    p = nn.Parameter(torch.zeros(n))
    p.grad = torch.zeros(n)
    noise.apply([p], step)
    return p.grad.clone()


@pytest.mark.parametrize("step", [0, 100])
def test_noise_variance_follows_schedule(step: int) -> None:
    cfg = GradNoise(eta=0.3, gamma=0.55)
    sample = noise_sample(GradientNoise(cfg, seed=1), step).double()
    want = 0.3 / (1 + step) ** 0.55
    assert sample.var().item() == pytest.approx(want, rel=0.03)
    assert abs(sample.mean().item()) < 5 * math.sqrt(want / N)


def test_noise_skips_params_without_grad_and_keeps_dtype() -> None:
    noise = GradientNoise(GradNoise(), seed=0)
    bare = nn.Parameter(torch.zeros(8))
    half = nn.Parameter(torch.zeros(8, dtype=torch.bfloat16))
    half.grad = torch.zeros(8, dtype=torch.bfloat16)
    noise.apply([bare, half], 0)
    assert bare.grad is None
    assert half.grad.dtype == torch.bfloat16 and bool(half.grad.ne(0).any())


def test_noise_reproducible_from_seed() -> None:
    cfg = GradNoise(eta=0.1, gamma=0.55)
    a = noise_sample(GradientNoise(cfg, seed=3), 0, 1000)
    b = noise_sample(GradientNoise(cfg, seed=3), 0, 1000)
    c = noise_sample(GradientNoise(cfg, seed=4), 0, 1000)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Successive steps draw fresh noise from the same stream.
    one = GradientNoise(cfg, seed=3)
    first, second = noise_sample(one, 0, 1000), noise_sample(one, 0, 1000)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_noise_resumes_same_stream(tmp_path: Path) -> None:
    cfg = GradNoise(eta=0.1, gamma=0.55)
    straight = GradientNoise(cfg, seed=5)
    for step in range(3):
        noise_sample(straight, step, 500)
    state = straight.state_dict()
    save_atomic({"noise": state}, tmp_path / "ckpt.pt")
    want = [noise_sample(straight, step, 500) for step in (3, 4)]

    resumed = GradientNoise(cfg, seed=999)  # a different seed: the state must win
    resumed.load_state_dict(load(tmp_path / "ckpt.pt")["noise"])
    got = [noise_sample(resumed, step, 500) for step in (3, 4)]
    assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))
