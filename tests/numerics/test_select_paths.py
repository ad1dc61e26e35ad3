"""Layer-path programs (CoLa): `select: {program: [...], body: [pool]}` runs pool layers in
the program's order; a repeated layer is one set of weights applied again, a layer left
out of the program is skipped (and has no weights). Checked against the same layers
applied by hand with nn.Linear / nn.RMSNorm modules holding copied weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import archc
from archc.cli import run

D = 8
POOL = [
    {"linear": {}},
    {"residual": [{"norm": "rms"}, {"mlp": {"hidden": 12, "act": "gelu"}}]},
    {"linear": {"bias": False}},
    {"linear": {}},
]


def _write(tmp_path: Path, program: list[int], pool: list | None = None, **extra: object) -> Path:
    spec = {
        "model": "cola",
        "d_model": D,
        "layers": [{"select": {"program": program, "body": pool or POOL}}],
        **extra,
    }
    path = tmp_path / "cola.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def test_program_repeats_share_weights_and_skips_drop_layers(tmp_path: Path) -> None:
    model = archc.compile(_write(tmp_path, [0, 1, 1, 2]), seed=0).double()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = set(dict(model.named_parameters()))
    assert not any(n.startswith("layers.0.select.3.") for n in names)  # skipped: no weights
    # The repeated layer holds one set of weights (one norm, one up, one down).
    assert sum(".select.1." in n for n in names) == 5
    pre = "layers.0.select"
    lin0 = _linear(sd[f"{pre}.0.linear.weight"], sd[f"{pre}.0.linear.bias"])
    norm = nn.RMSNorm(D, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.copy_(sd[f"{pre}.1.residual.0.norm.weight"])
    up = _linear(sd[f"{pre}.1.residual.1.mlp.up.weight"], sd[f"{pre}.1.residual.1.mlp.up.bias"])
    down = _linear(
        sd[f"{pre}.1.residual.1.mlp.down.weight"], sd[f"{pre}.1.residual.1.mlp.down.bias"]
    )
    lin2 = _linear(sd[f"{pre}.2.linear.weight"], None)

    def block(h: torch.Tensor) -> torch.Tensor:
        return h + down(F.gelu(up(norm(h))))

    x = torch.randn(2, 5, D, dtype=torch.float64)
    y = model(x)
    ref = lin2(block(block(lin0(x))))
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # Gradients of the shared layer sum both applications, as in the hand version.
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    got = dict(model.named_parameters())[f"{pre}.1.residual.1.mlp.up.weight"].grad
    torch.testing.assert_close(got, up.weight.grad, rtol=1e-12, atol=1e-12)


def test_program_order_is_the_execution_order(tmp_path: Path) -> None:
    """[2, 0] applies pool layer 2 first: not the same function as [0, 2]."""
    x = torch.randn(1, 3, D)
    a = archc.compile(_write(tmp_path, [2, 0]), seed=0)
    sd = a.state_dict()
    pre = "layers.0.select"
    ref = F.linear(
        F.linear(x, sd[f"{pre}.2.linear.weight"]),
        sd[f"{pre}.0.linear.weight"],
        sd[f"{pre}.0.linear.bias"],
    )
    torch.testing.assert_close(a(x), ref)


def test_causal_and_streaming_through_a_repeated_attention_layer(tmp_path: Path) -> None:
    pool = [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": 2}}]},
        {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
    ]
    spec = {
        "model": "cola-lm",
        "vocab": 11,
        "d_model": D,
        "layers": ["embed", {"select": {"program": [0, 1, 0, 1], "body": pool}}, "head"],
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(spec))
    model = archc.compile(path, seed=0).double().eval()
    # Each application of the repeated attention keeps its own KV cache.
    assert model.incremental_support() == (True, "")
    x = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(0))
    y = model(x)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 3) % 11
        y2 = model(x2)
        assert torch.equal(y2[:, :t], y[:, :t])
        assert (y2[:, t:] - y[:, t:]).abs().max() > 0
    a, st = model(x[:, :5], return_state=True)
    b, st = model(x[:, 5:6], state=st, return_state=True)
    c = model(x[:, 6:], state=st)
    torch.testing.assert_close(torch.cat([a, b, c], 1), y, rtol=1e-10, atol=1e-10)


def test_programs_without_repeated_state_stream(tmp_path: Path) -> None:
    pool = [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": 2}}]},
        {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
    ]
    spec = {
        "model": "cola-lm",
        "vocab": 11,
        "d_model": D,
        "layers": ["embed", {"select": {"program": [0, 1, 1], "body": pool}}, "head"],
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(spec))
    model = archc.compile(path, seed=0).double().eval()
    assert model.incremental_support() == (True, "")
    x = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(1))
    a, st = model(x[:, :4], return_state=True)
    b = model(x[:, 4:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), model(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("program", "pool", "message"),
    [
        ([0, 4], None, "select program index 4 is out of range: the pool has 4 layers"),
        ([0], [{"linear": {"out": 3}}], "select pool layer 0 changes the width from 8 to 3"),
        ([0, -1], None, "program indices must be >= 0"),
        ([], None, "at least 1 item"),
    ],
)
def test_bad_programs_are_located_errors(
    tmp_path: Path, program: list[int], pool: list | None, message: str
) -> None:
    path = _write(tmp_path, program, pool)
    messages: list[str] = []
    assert run(["check", str(path)], handler=messages.append) == 2
    text = "\n".join(messages)
    assert message in text, text
    assert f"{path}:" in text and ": error: " in text


@pytest.mark.parametrize("name", ["cola-path.yaml", "landmark-retrieval.yaml", "sortednet.yaml"])
def test_emitted_standalone_model_matches(name: str, tmp_path: Path) -> None:
    """The select library specs emit a model.py that needs torch alone and computes
    what the compiled model computes."""
    spec = Path(__file__).resolve().parents[2] / "specs" / name
    out = tmp_path / "model.py"
    assert run(["compile", str(spec), "--emit", "torch", "-o", str(out)]) == 0
    text = out.read_text()
    assert "import archc" not in text and "from archc" not in text
    namespace: dict[str, object] = {"__name__": "emitted"}
    exec(compile(text, str(out), "exec"), namespace)
    model = namespace["Model"]().eval()  # type: ignore[operator]
    ref = archc.compile(spec, seed=3).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_per_sample_programs_run_each_sample_on_its_own_path(tmp_path: Path) -> None:
    """`programs`: sample b runs programs[choice[b]]; each row equals that program run
    alone (a per-model program over the same pool and weights)."""
    progs = [[0, 1], [1, 1, 2], [2]]
    per_sample = archc.compile(_write_programs(tmp_path, progs), seed=0).double().eval()
    chooser = per_sample.get_submodule("layers.0.select")
    x = torch.randn(4, 5, D, dtype=torch.float64)
    choice = torch.tensor([1, 0, 1, 2])
    chooser.choose(choice)
    y = per_sample(x)
    assert per_sample.stats()["layers.0.select.program_1"] == 0.5
    for i, prog in enumerate(progs):
        alone = archc.compile(_write(tmp_path, prog), seed=0).double().eval()
        alone.load_state_dict(
            {k: v for k, v in per_sample.state_dict().items() if k in alone.state_dict()}
        )
        rows = choice == i
        torch.testing.assert_close(y[rows], alone(x[rows]), rtol=1e-12, atol=1e-12)
    chooser.choose(2)  # every sample
    torch.testing.assert_close(per_sample(x)[3], y[3], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        chooser.choose(3)


def test_random_per_sample_programs_in_training_only(tmp_path: Path) -> None:
    model = archc.compile(_write_programs(tmp_path, [[0], [1]], sample="random"), seed=0)
    x = torch.randn(64, 2, D)
    model.train()
    torch.manual_seed(0)
    model(x)
    frac = model.stats()["layers.0.select.program_1"]
    assert 0.2 < frac < 0.8
    model.eval()
    state = torch.get_rng_state()
    model(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.stats()["layers.0.select.program_0"] == 1.0


def _write_programs(tmp_path: Path, programs: list[list[int]], **select: object) -> Path:
    spec = {
        "model": "cola-per-sample",
        "d_model": D,
        "layers": [{"select": {"programs": programs, **select, "body": POOL}}],
    }
    path = tmp_path / "per-sample.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_per_sample_programs_stream(tmp_path: Path) -> None:
    pool = [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": 2}}]},
        {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
    ]
    spec = {
        "model": "cola-lm",
        "vocab": 11,
        "d_model": D,
        "layers": ["embed", {"select": {"programs": [[0, 1, 0], [0, 0, 1]], "body": pool}}],
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(spec))
    model = archc.compile(path, seed=0).double().eval()
    model.get_submodule("layers.1.select").choose(torch.tensor([1, 0]))
    x = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(2))
    a, st = model(x[:, :3], return_state=True)
    b = model(x[:, 3:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), model(x), rtol=1e-10, atol=1e-10)
