"""loop semantics against hand-written float64 references: input injection (add,
concat), gradient policies (full / last(k) / one-step), weight tying, per-iteration
LoRA, sampled step counts, and causality of a looped causal model."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.diagnostics import DiagnosticError

D = 6


def _loop_spec(loop: str, body: str = "[{linear: {bias: false}}]", d: int = D) -> str:
    return f"model: t\nd_model: {d}\nlayers:\n  - loop: {{{loop}, body: {body}}}\n"


def _w(model: torch.nn.Module, copy: int) -> torch.Tensor:
    return dict(model.named_parameters())[f"layers.0.loop.{copy}.0.linear.weight"]


def _x(seed: int = 0, t: int = 4) -> torch.Tensor:
    return torch.randn(2, t, D, generator=torch.Generator().manual_seed(seed))


def test_inject_add_equals_reference() -> None:
    model = archc.compile(_loop_spec("steps: 3, tie: none, inject: add"), seed=1)
    x = _x()
    s = torch.zeros_like(x, dtype=torch.float64)
    for i in range(3):  # s_{i+1} = W_i (s_i + x), s_0 = 0
        s = (s + x.double()) @ _w(model, i).double().T
    torch.testing.assert_close(model(x).double(), s, rtol=1e-5, atol=1e-6)


def test_inject_concat_equals_reference() -> None:
    model = archc.compile(_loop_spec("steps: 3, tie: all, inject: concat"), seed=2)
    p = dict(model.named_parameters())
    wc, bc = p["layers.0.loop.inject.weight"].double(), p["layers.0.loop.inject.bias"].double()
    assert wc.shape == (D, 2 * D)
    with torch.no_grad():
        bc.copy_(torch.randn(D))  # a non-zero bias so it is exercised
        p["layers.0.loop.inject.bias"].copy_(bc)
    x = _x(1)
    s = torch.zeros_like(x, dtype=torch.float64)
    for _ in range(3):  # s_{i+1} = W (Wc [s_i, x] + bc)
        s = (torch.cat([s, x.double()], -1) @ wc.T + bc) @ _w(model, 0).double().T
    torch.testing.assert_close(model(x).double(), s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad,k", [("one-step", 1), ("last(2)", 2), ("full", 4)])
def test_gradient_policy_equals_detached_reference(grad: str, k: int) -> None:
    steps = 4
    body = "[{linear: {bias: false}}, {act: tanh}]"
    model = archc.compile(
        _loop_spec(f"steps: {steps}, tie: none, inject: add, grad: {grad}", body), seed=3
    )
    x = _x(2).requires_grad_(True)
    model(x).square().sum().backward()
    # Reference: the first steps - k iterations without a graph, the state detached.
    ws = [_w(model, i).detach().double().requires_grad_(True) for i in range(steps)]
    xr = x.detach().double().requires_grad_(True)
    s = torch.zeros_like(xr)
    for i in range(steps):
        if i < steps - k:
            with torch.no_grad():
                s = torch.tanh((s + xr) @ ws[i].T)
        else:
            s = s.detach() if i == steps - k else s
            s = torch.tanh((s + xr) @ ws[i].T)
    s.square().sum().backward()
    for i in range(steps):
        got = _w(model, i).grad
        if i < steps - k:  # used only by earlier iterations: no gradient at all
            assert got is None or not got.abs().any(), i
        else:
            torch.testing.assert_close(got.double(), ws[i].grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-6)


def test_nested_no_grad_stays_off() -> None:
    """An inner loop with grad: full inside an outer one-step loop records nothing in the
    outer loop's earlier iterations."""
    body = "[{loop: {steps: 2, tie: none, body: [{linear: {bias: false}}]}}]"
    model = archc.compile(_loop_spec("steps: 3, tie: none, grad: one-step", body), seed=4)
    model(_x()).sum().backward()
    names = {n: p.grad for n, p in model.named_parameters()}
    for c in range(3):
        for j in range(2):
            g = names[f"layers.0.loop.{c}.0.loop.{j}.0.linear.weight"]
            assert (g is not None and g.abs().any()) == (c == 2), (c, j)


def test_tying_shares_storage() -> None:
    def weights(tie: str, steps: int) -> list[torch.Tensor]:
        m = archc.compile(_loop_spec(f"steps: {steps}, tie: {tie}"), seed=0)
        return [p for n, p in m.named_parameters() if n.endswith("linear.weight")]

    assert len(weights("all", 5)) == 1
    assert len(weights("none", 5)) == 5
    cyc = weights("cycle(2)", 5)
    assert len(cyc) == 2 and cyc[0].data_ptr() != cyc[1].data_ptr()
    # cycle(2) over 5 steps applies W0 W1 W0 W1 W0.
    model = archc.compile(_loop_spec("steps: 5, tie: cycle(2)"), seed=5)
    x = _x(3)
    s = x.double()
    for i in range(5):
        s = s @ _w(model, i % 2).double().T
    torch.testing.assert_close(model(x).double(), s, rtol=1e-5, atol=1e-6)
    # One tensor, used at every step: its gradient is the sum over steps.
    tied = archc.compile(_loop_spec("steps: 3, tie: all"), seed=6)
    tied(x).sum().backward()
    w = _w(tied, 0).detach().double().requires_grad_(True)
    (x.double() @ w.T @ w.T @ w.T).sum().backward()
    torch.testing.assert_close(_w(tied, 0).grad.double(), w.grad, rtol=1e-5, atol=1e-6)


def _lora(model: torch.nn.Module, t: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Body linear t's adapters, one (A, B) per iteration that runs its region."""
    p = dict(model.named_parameters())
    n = sum(1 for k in p if k.startswith(f"layers.0.loop.lora.{t}.") and k.endswith(".a"))
    return (
        [p[f"layers.0.loop.lora.{t}.{i}.a"] for i in range(n)],
        [p[f"layers.0.loop.lora.{t}.{i}.b"] for i in range(n)],
    )


def test_lora_per_iteration_equals_reference() -> None:
    spec = _loop_spec("steps: 3, tie: all, lora: 2", "[{linear: {bias: false}}, {act: tanh}]")
    model = archc.compile(spec, seed=7)
    a, b = _lora(model, 0)
    assert len(a) == 3 and all(ai.shape == (2, D) for ai in a)
    assert all(bi.shape == (D, 2) and not bi.any() for bi in b)
    ptrs = {t.data_ptr() for t in a + b}
    assert len(ptrs) == 6  # distinct parameters, one pair per iteration
    x = _x(4)
    w = _w(model, 0).double()
    plain = x.double()
    for _ in range(3):  # B = 0 at init: the loop without adapters
        plain = torch.tanh(plain @ w.T)
    torch.testing.assert_close(model(x).double(), plain, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(9)
        for bi in b:
            bi.copy_(torch.randn(bi.shape, generator=gen))
    s = x.double()
    for i in range(3):  # iteration i: W s + B_i A_i s
        s = torch.tanh(s @ w.T + s @ a[i].double().T @ b[i].double().T)
    out = model(x)
    torch.testing.assert_close(out.double(), s, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    for i in range(3):  # every iteration's own adapter gets gradient
        assert a[i].grad.abs().sum() > 0 and b[i].grad.abs().sum() > 0, i


def test_lora_with_one_step_grad_reaches_last_adapter_only() -> None:
    spec = _loop_spec("steps: 3, tie: all, lora: 2, grad: one-step")
    model = archc.compile(spec, seed=8)
    model(_x()).sum().backward()
    _, b = _lora(model, 0)
    assert b[0].grad is None and b[1].grad is None and b[2].grad.abs().sum() > 0


def test_lora_cycle_slots() -> None:
    """cycle(2) over 5 steps: region 0 runs 3 times, region 1 twice."""
    model = archc.compile(_loop_spec("steps: 5, tie: cycle(2), lora: 1"), seed=0)
    assert len(_lora(model, 0)[0]) == 3 and len(_lora(model, 1)[0]) == 2


@pytest.mark.parametrize("sampler", ["uniform(1,4)", "poisson(2.5)"])
def test_sampled_steps(sampler: str) -> None:
    model = archc.compile(
        _loop_spec(f'steps: {{train: "{sampler}", eval: 6}}, inject: add'), seed=1
    )
    w, x = _w(model, 0).double(), _x(5)

    def ref(n: int) -> torch.Tensor:
        s = torch.zeros_like(x, dtype=torch.float64)
        for _ in range(n):
            s = (s + x.double()) @ w.T
        return s

    for seed in range(4):
        torch.manual_seed(seed)  # replay the draw the model makes from the global RNG
        if sampler.startswith("uniform"):
            n = int(torch.randint(1, 5, ()).item())
        else:
            n = max(1, int(torch.poisson(torch.tensor(2.5)).item()))
        torch.manual_seed(seed)
        model.train()
        torch.testing.assert_close(model(x).double(), ref(n), rtol=1e-5, atol=1e-6)
    model.eval()
    torch.testing.assert_close(model(x).double(), ref(6), rtol=1e-5, atol=1e-6)


CAUSAL = """
model: c
vocab: 13
d_model: 16
layers:
  - embed
  - loop: {steps: 3, tie: all, inject: concat, lora: 2, grad: one-step, body: [
      {residual: [{norm: rms}, {attention: {heads: 2, pos: rope}}]},
      {residual: [{norm: rms}, {mlp: {mult: 2}}]}]}
  - loop: {steps: {train: "uniform(1,3)", eval: 2}, inject: add, body: [
      {residual: [{norm: rms}, {attention: {heads: 2}}]}]}
  - head
"""


def test_looped_model_is_causal() -> None:
    model = archc.compile(CAUSAL, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():  # make the adapters non-trivial
            p.add_(0.1 * torch.randn_like(p))
        ids = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(0))
        y = model(ids)
        for t in (0, 4, 8):
            other = ids.clone()
            other[:, t] = (other[:, t] + 1) % 13
            y2 = model(other)
            torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=1e-6)
            assert (y2[:, t] - y[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "loop,where",
    [
        ('steps: {train: "uniform(1,3)", eval: 2}, tie: none', "tie"),
        ("steps: 2, lora: 2, tie: none", "lora"),
        ('steps: {train: "poisson(2)", eval: 2}, lora: 2', "lora"),
        ("steps: 2, grad: last(0)", "grad"),
        ('steps: {train: "uniform(3,1)", eval: 2}', "train"),
        ("steps: 2, inject: mul", "inject"),
    ],
)
def test_loop_errors(loop: str, where: str) -> None:
    with pytest.raises(DiagnosticError) as info:
        archc.compile(_loop_spec(loop))
    assert ":" in str(info.value)


def test_lora_needs_a_linear() -> None:
    with pytest.raises(DiagnosticError, match="at least one linear"):
        archc.compile(_loop_spec("steps: 2, lora: 2", "[{act: tanh}]"))


def test_nested_two_timescales_equals_reference() -> None:
    """HRM's shape: an outer (high) loop whose body runs an inner (low) loop with input
    injection, then a high-level update."""
    inner = (
        "{loop: {steps: 3, tie: all, inject: add, body: [{linear: {bias: false}}, {act: tanh}]}}"
    )
    spec = _loop_spec("steps: 2, tie: all, inject: add", f"[{inner}, {{linear: {{bias: false}}}}]")
    model = archc.compile(spec, seed=11)
    p = dict(model.named_parameters())
    wl = p["layers.0.loop.0.0.loop.0.0.linear.weight"].double()
    wh = p["layers.0.loop.0.1.linear.weight"].double()
    x = _x(6).double()
    z_h = torch.zeros_like(x)
    for _ in range(2):  # high cycles
        u = z_h + x
        z_l = torch.zeros_like(x)
        for _ in range(3):  # low steps: z_L <- tanh(W_L (z_L + z_H + x))
            z_l = torch.tanh((z_l + u) @ wl.T)
        z_h = z_l @ wh.T
    torch.testing.assert_close(model(x.float()).double(), z_h, rtol=1e-5, atol=1e-6)


def test_looped_model_runs_incrementally() -> None:
    """Chunk by chunk with the carried state (KV caches per loop step) equals the full
    forward, with injection and per-iteration LoRA."""
    model = archc.compile(CAUSAL, seed=1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ids = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(2))
        full = model(ids)
        a, state = model(ids[:, :6], return_state=True)
        b = model(ids[:, 6:], state=state)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["hrm.yaml", "recurrent-depth.yaml", "relaxed-recursive.yaml"])
def test_standalone_model_py_matches(name: str) -> None:
    """`archc compile --emit torch` writes a model.py (torch only) that computes the same
    function, loops, injection, LoRA adapters and halting included."""
    from pathlib import Path

    from archc.backends.torch.emit import emit_torch

    model = archc.compile(Path(__file__).resolve().parents[2] / "specs" / name, seed=0).eval()
    ns: dict[str, object] = {}
    exec(compile(emit_torch(model.graph), "model.py", "exec"), ns)
    standalone = ns["Model"]().eval()  # type: ignore[operator]
    standalone.load_state_dict(model.state_dict())
    ids = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(standalone(ids), model(ids), rtol=1e-6, atol=1e-6)


def test_loop_name_sets_paths() -> None:
    model = archc.compile(_loop_spec("steps: 2, name: high"))
    assert [n for n, _ in model.named_parameters()] == ["layers.0.high.0.0.linear.weight"]
