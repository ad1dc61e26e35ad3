"""HRM-style training of `halt` against hand-written float64 references: the Q-head's
answer-correctness targets (Q_halt: "this step's prediction is right"; Q_continue: the
next step's bootstrap), deep supervision (every step scored, each starting from the
previous state detached, the input re-injected) with its gradients, and the located
error when the layers after such a halt also read something from before it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.diagnostics import DiagnosticError
from archc.runtime.objective import loss_sum, supervision

D, V = 4, 3


def _spec(halt: str, body: str = "[{act: tanh}]") -> str:
    return (
        f"model: t\nd_model: {D}\nlayers:\n  - halt: {{{halt}, body: {body}}}\n"
        f"  - linear: {{out: {V}}}\n"
    )


def _set(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)


def test_answer_targets_equal_reference() -> None:
    """Per-sample Q-head, no exploration: Q_halt's target is whether every position of
    the step's prediction (the linear after the halt) is right; Q_continue's is
    sigmoid(max Q) of the next step, or its Q_halt when that step is the last."""
    spec = _spec("max_steps: 3, criterion: q-head, explore: 0.0, per: sample, target: answer")
    model = archc.compile(spec).train()
    g = torch.Generator().manual_seed(1)
    wq = torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.3]])
    bq = torch.tensor([0.0, 0.4])
    w, c = torch.randn(V, D, generator=g), torch.randn(V, generator=g)
    _set(
        model,
        {
            "layers.0.halt.q.weight": wq,
            "layers.0.halt.q.bias": bq,
            "layers.1.linear.weight": w,
            "layers.1.linear.bias": c,
        },
    )
    x = torch.randn(6, 3, D, generator=g)
    targets = torch.randint(0, V, (6, 3), generator=g)
    # Make sample 0's answer right after one step, so both targets occur.
    targets[0] = (torch.tanh(x[0]) @ w.T + c).argmax(-1)
    y = model(x)
    aux = model.aux_loss(supervision(targets, 1, 1.0))

    halt_l = cont_l = 0.0
    nh = nc = 0
    agree, seen, answers = 0, 0, []
    for b in range(6):
        z = x[b].double()
        qs, right = [], []
        for i in range(3):
            z = torch.tanh(z)
            pred = z @ w.double().T + c.double()
            right.append(float(bool((pred.argmax(-1) == targets[b]).all())))
            q = z.mean(0) @ wq.double().T + bq.double()
            qs.append(q)
            if q[0] > q[1] or i + 1 == 3:
                break
        torch.testing.assert_close(y[b].double(), z @ w.double().T + c.double(), atol=1e-5, rtol=0)
        answers += right
        for i, q in enumerate(qs):
            halt_l += float(F.binary_cross_entropy_with_logits(q[0], torch.tensor(right[i])))
            nh += 1
            agree += int((float(q[0]) > 0) == bool(right[i]))
            seen += 1
            if i + 1 < len(qs):
                nxt = torch.sigmoid(qs[i + 1][0] if i + 1 == 2 else qs[i + 1].max())
                cont_l += float(F.binary_cross_entropy_with_logits(q[1], nxt))
                nc += 1
    assert nc > 0 and 0 < sum(answers) < len(answers)  # both targets occur
    expected = 0.5 * (halt_l / nh + cont_l / max(nc, 1))
    assert aux is not None and abs(float(aux.detach()) - expected) < 1e-5
    assert model.stats()["layers.0.halt.q_halt_acc"] == pytest.approx(agree / seen)
    aux.backward()
    assert dict(model.named_parameters())["layers.0.halt.q.weight"].grad.abs().sum() > 0


def test_answer_target_needs_the_targets() -> None:
    """Without supervision there is nothing to judge the answer by: no Q loss at all
    (not a label-free stand-in), and the record is dropped."""
    spec = _spec("max_steps: 2, criterion: q-head, explore: 0.0, per: sample")
    model = archc.compile(spec).train()
    model(torch.randn(2, 3, D))
    assert model.aux_loss() is None
    assert model.aux_loss(supervision(torch.zeros(2, 3, dtype=torch.long), 1, 1.0)) is None


def _deep_reference(
    x: torch.Tensor, targets: torch.Tensor, p: dict[str, torch.Tensor], threshold: float
) -> tuple[torch.Tensor, list[int]]:
    """HRM deep supervision, by hand, sample by sample: z starts at 0; step i reads
    z.detach() + x; every step's prediction is scored (summed cross-entropy); the
    delta criterion (relative change of z) halts a sample, at the latest at step 3."""
    total = x.new_zeros(())
    halted_at = []
    for b in range(x.shape[0]):
        z = torch.zeros_like(x[b])
        for i in range(3):
            new = torch.tanh((z.detach() + x[b]) @ p["w"].T + p["b"])
            delta = float((new - z).detach().norm() / z.detach().norm().clamp_min(1e-12))
            pred = new @ p["hw"].T + p["hb"]
            total = total + F.cross_entropy(pred, targets[b], reduction="sum")
            z = new
            if delta < threshold or i + 1 == 3:
                halted_at.append(i + 1)
                break
    return total, halted_at


def test_deep_supervision_loss_and_gradients_equal_reference() -> None:
    """Deep supervision: the main loss (the halted step's prediction) plus the aux loss
    (every earlier step's) equals the sum over all steps, and the gradients equal the
    reference's, where each step's input state is detached."""
    threshold = 0.3
    spec = _spec(
        f"max_steps: 3, criterion: delta, threshold: {threshold}, per: sample, "
        "supervise: deep, inject: add",
        "[{linear: {out: 4}}, {act: tanh}]",
    )
    model = archc.compile(spec).double().train()
    g = torch.Generator().manual_seed(3)
    ref = {
        "w": (0.3 * torch.randn(D, D, generator=g)).double(),
        "b": (0.1 * torch.randn(D, generator=g)).double(),
        "hw": torch.randn(V, D, generator=g).double(),
        "hb": torch.randn(V, generator=g).double(),
    }
    names = {
        "w": "layers.0.halt.0.0.linear.weight",
        "b": "layers.0.halt.0.0.linear.bias",
        "hw": "layers.1.linear.weight",
        "hb": "layers.1.linear.bias",
    }
    _set(model, {names[k]: v for k, v in ref.items()})
    scales = torch.tensor([0.02, 0.3, 1.0, 3.0, 0.05]).double()[:, None, None]
    x = scales * torch.randn(5, 4, D, generator=g).double()
    targets = torch.randint(0, V, (5, 4), generator=g)

    y = model(x)
    aux = model.aux_loss(supervision(targets, 1, 1.0))
    total = loss_sum(y, targets).double() + aux
    total.backward()

    leaves = {k: v.clone().requires_grad_() for k, v in ref.items()}
    expected, halted_at = _deep_reference(x, targets, leaves, threshold)
    expected.backward()
    assert min(halted_at) < 3 and sum(halted_at) > len(halted_at)  # earlier steps scored
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    params = dict(model.named_parameters())
    for k, leaf in leaves.items():
        torch.testing.assert_close(params[names[k]].grad, leaf.grad, rtol=1e-5, atol=1e-6)


def test_readout_must_read_the_halt_alone() -> None:
    """A halt trained on per-step predictions inside a residual: the add after it also
    reads the input from before it, so there is no per-step prediction; the error points
    at the halt."""
    spec = (
        f"model: t\nd_model: {D}\nlayers:\n"
        "  - residual:\n"
        "      - halt: {max_steps: 2, supervise: deep, body: [{act: tanh}]}\n"
        f"  - linear: {{out: {V}}}\n"
    )
    with pytest.raises(DiagnosticError) as err:
        archc.compile(spec)
    diag = err.value.diagnostics[0]
    assert "skip connection" in diag.message and diag.loc is not None and diag.loc.line == 5
    ok = spec.replace("supervise: deep", "criterion: delta")  # label-free: allowed
    archc.compile(ok)
