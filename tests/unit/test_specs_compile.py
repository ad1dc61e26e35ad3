"""Every spec in specs/ (YAML and DSL) checks, compiles, and trains one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.cli import run
from archc.runtime.objective import supervision

SPECS = Path(__file__).resolve().parents[2] / "specs"
SPEC_FILES = sorted([*SPECS.glob("*.yaml"), *SPECS.glob("*.arch")])


def test_library_has_the_seed_specs() -> None:
    names = {p.name for p in SPEC_FILES}
    expected = {"gpt", "llama", "lstm", "gru", "looped", "conv"}
    assert {f"{n}.yaml" for n in expected} <= names
    assert {"gpt.arch", "looped.arch", "lstm.arch"} <= names


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.name)
def test_archc_check_passes(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    assert run(["check", str(spec)], handler=messages.append) == 0, messages
    assert f"{spec}: ok" in capsys.readouterr().out


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.name)
def test_spec_compiles_and_trains_a_step(spec: Path) -> None:
    torch.manual_seed(0)
    model = archc.compile(spec, seed=0)
    vocab = model.spec.vocab
    first = model.graph.node(model.graph.inputs[0])
    if first.attrs["kind"] == "tokens":
        x = torch.randint(0, vocab, (2, 16))
    else:
        x = torch.randn(2, 16, model.spec.d_model)
    model.train()
    # Past any training-time switch (a depth up-scale), so that every block is in use.
    model.begin_step(10**9)
    y = model(x)
    assert y.shape[:2] == (2, 16)
    assert torch.isfinite(y).all()
    sup = None
    if vocab is not None and y.shape[-1] == vocab:
        target = torch.randint(0, vocab, (2, 16))
        loss = F.cross_entropy(y.reshape(-1, vocab), target.reshape(-1))
        # An untrained LM is about uniform: its loss is near log(vocab).
        assert abs(loss.item() - torch.log(torch.tensor(float(vocab))).item()) < 2.0
        sup = supervision(target, 1, 1.0 / target.numel())
    else:
        loss = y.square().mean()
    assert torch.isfinite(loss)
    # As archc train adds them: e.g. a halting Q-head learns only here, against targets.
    aux = model.aux_loss(sup)
    if aux is not None:
        loss = loss + aux
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["gpt", "looped", "lstm"])
def test_dsl_twin_is_the_same_spec(name: str) -> None:
    from_yaml = archc.load(SPECS / f"{name}.yaml")
    from_dsl = archc.load(SPECS / f"{name}.arch")
    assert from_yaml.semantic_dump() == from_dsl.semantic_dump()


def test_looped_spec_has_one_block_of_parameters() -> None:
    looped = archc.compile(SPECS / "looped.yaml")
    unrolled = archc.compile(SPECS / "looped.yaml", ["layers[1].loop.tie=none"])
    n_loop = sum(p.numel() for p in looped.parameters())
    n_unrolled = sum(p.numel() for p in unrolled.parameters())
    block = (n_unrolled - n_loop) // 3  # tie=none holds 4 copies instead of 1
    assert n_unrolled == n_loop + 3 * block and block > 0


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.name)
def test_spec_smoke_trains_with_archc_train(spec: Path, tmp_path: Path) -> None:
    """Three steps of the real training loop: on the spec's own task when it has one,
    else on the copy task (vocab 10 fits every library LM)."""
    from archc.runtime.train import train

    base = archc.load(spec)
    overrides = ["train.steps=3", "train.batch_size=2", "train.eval_batches=1"]
    if base.train.task is None:
        overrides += ["train.task={name: copy, length: 4}", "train.seq_len=16"]
    else:
        overrides += [f"train.seq_len={min(base.train.seq_len, 64)}"]
    summary = train(archc.load(spec, overrides), tmp_path / "run", show_progress=False)
    assert summary.steps == 3 and summary.loss == summary.loss  # finite, not NaN
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
