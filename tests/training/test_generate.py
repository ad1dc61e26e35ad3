"""Generation carries the model's state: one (1, 1) forward per new token, same tokens as
re-running the whole prefix (the oracle), sampling that respects temperature and top-k."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from training_helpers import REPO

import archc
from archc.backends.torch.compiled import CompiledModel
from archc.diagnostics import DiagnosticError
from archc.runtime.generate import generate, sample


def _model(name: str, *overrides: str) -> CompiledModel:
    return archc.compile(REPO / "specs" / name, list(overrides), seed=3).eval()


def _greedy_by_rerunning(model: CompiledModel, prompt: torch.Tensor, n: int) -> list[int]:
    """The oracle: the whole sequence so far through the model for every new token."""
    seq = prompt.tolist()
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize("name", ["gpt.yaml", "lstm.yaml", "looped.yaml", "conv.yaml"])
def test_greedy_equals_rerunning_the_prefix(name: str) -> None:
    model = _model(name)
    prompt = torch.tensor([5, 17, 200, 3, 99])
    got = generate(model, prompt, 12, vocab=256, temperature=0.0)
    assert got == _greedy_by_rerunning(model, prompt, 12)


def test_one_token_per_step_and_constant_state_for_recurrent_models() -> None:
    model = _model("lstm.yaml")
    calls: list[tuple[tuple[int, ...], int]] = []
    real = model.forward

    def spy(x: torch.Tensor, state: dict[str, Any] | None = None, return_state: bool = False):
        out = real(x, state=state, return_state=return_state)
        carried = sum(t.numel() for v in out[1].values() if not isinstance(v, int) for t in v)
        calls.append((tuple(x.shape), carried))
        return out

    model.forward = spy  # type: ignore[method-assign]
    generate(model, torch.tensor([1, 2, 3, 4, 5, 6, 7]), 20, vocab=256, seed=1)
    assert calls[0][0] == (1, 7)  # the prompt once
    assert [shape for shape, _ in calls[1:]] == [(1, 1)] * 19  # never the prefix again
    assert len({size for _, size in calls}) == 1  # an LSTM carries the same state size


def test_sampling_respects_top_k_and_seed() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    picks = {int(sample(logits, 1.0, 2, torch.Generator().manual_seed(s))) for s in range(200)}
    assert picks == {1, 2}  # only the two most likely
    assert int(sample(logits, 0.0, None, torch.Generator())) == 1  # greedy
    model = _model("gpt.yaml")
    prompt = torch.tensor([7, 8, 9])
    a = generate(model, prompt, 10, 256, temperature=1.0, top_k=20, seed=4)
    b = generate(model, prompt, 10, 256, temperature=1.0, top_k=20, seed=4)
    assert a == b


def test_generation_errors() -> None:
    with pytest.raises(DiagnosticError, match="cannot generate token by token"):
        generate(
            _model("gpt.yaml", "define.block[0].residual[1].attention.mask=none"),
            torch.tensor([1]),
            3,
            256,
        )
    with pytest.raises(DiagnosticError, match="exceed the model's 512 positions"):
        generate(_model("gpt.yaml"), torch.tensor([1] * 500), 20, 256)
    with pytest.raises(DiagnosticError, match="prompt is empty"):
        generate(_model("lstm.yaml"), torch.tensor([], dtype=torch.long), 3, 256)
