"""Auxiliary losses and statistics recorded by modules during a forward are collected
once by CompiledModel.aux_loss() / stats()."""

from __future__ import annotations

import torch

import archc

SPEC = """
model: aux
vocab: 8
d_model: 4
layers: [embed, {mingru: {hidden: 4}}, {linear: 6}, head]
"""


def test_aux_losses_are_summed_once_and_stats_keyed_by_path() -> None:
    model = archc.compile(SPEC)
    assert model.aux_loss() is None and model.stats() == {}
    a, b = torch.tensor(2.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    model.get_submodule("layers.1.mingru").aux_loss_value = a
    model.get_submodule("layers.2.linear").aux_loss_value = b
    model.get_submodule("layers.1.mingru").stats_values = {"steps": torch.tensor(3.0)}
    total = model.aux_loss()
    assert total is not None and total.item() == 2.5
    total.backward()  # the graph reaches the recorded tensors
    assert a.grad is not None and b.grad is not None
    assert model.aux_loss() is None  # taken by the first read
    assert model.stats() == {"layers.1.mingru.steps": 3.0}
