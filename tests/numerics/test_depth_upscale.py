"""Depth up-scaling (`repeat: {upscale: {drop: m, at_step: k}}`, SOLAR) against plain
stacks built by hand: before the up-scale the model is the n-block base model; right
after it, the 2 (n - m)-block model [base 0..n-m-1] + [base m..n-1] (SOLAR's mapping,
written here independently of the module); AdamW leaves the unused blocks untouched;
a checkpoint taken after the switch resumes the up-scaled model; located errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import archc
from archc.api import load
from archc.diagnostics import DiagnosticError
from archc.runtime.optim import make_optimizer
from archc.runtime.train import Trainer, train

N, M, K, VOCAB = 5, 2, 3, 16
PATH = "layers.1.repeat"
BLOCK = [
    {"residual": [{"norm": "rms"}, {"attention": {"heads": 2, "pos": "rope"}}]},
    {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
]


def _spec(n: int, upscale: dict[str, Any] | None = None, **train: Any) -> dict[str, Any]:
    rep: dict[str, Any] = {"n": n, "body": ["block"]}
    if upscale is not None:
        rep["upscale"] = upscale
    spec: dict[str, Any] = {
        "model": "dus",
        "vocab": VOCAB,
        "d_model": 16,
        "define": {"block": BLOCK},
        "layers": ["embed", {"repeat": rep}, {"norm": "rms"}, "head"],
    }
    if train:
        spec["train"] = train
    return spec


def _text(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def _blocks(model: torch.nn.Module) -> dict[int, dict[str, torch.Tensor]]:
    """Parameters of each block of the repeat at PATH: {block: {suffix: tensor}}."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if name.startswith(PATH + "."):
            i, _, rest = name.removeprefix(PATH + ".").partition(".")
            out.setdefault(int(i), {})[rest] = p
    return out


def _plain_from(blocks: list[dict[str, torch.Tensor]], donor: torch.nn.Module) -> Any:
    """A plain `repeat: {n: len(blocks)}` model whose block i has the weights blocks[i]
    and whose other weights (embedding, final norm, head) are the donor's."""
    plain = archc.compile(_text(_spec(len(blocks))), seed=1).double()
    with torch.no_grad():
        own = dict(plain.named_parameters())
        for name, p in donor.named_parameters():
            if not name.startswith(PATH + "."):
                own[name].copy_(p)
        for i, params in enumerate(blocks):
            for suffix, value in params.items():
                own[f"{PATH}.{i}.{suffix}"].copy_(value)
    return plain.eval()


def _dus_model() -> Any:
    model = archc.compile(_text(_spec(N, {"drop": M, "at_step": K})), seed=0).double().eval()
    torch.manual_seed(0)
    with torch.no_grad():  # distinct weights everywhere, the unused blocks included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_before_the_switch_it_is_the_base_model() -> None:
    model = _dus_model()
    blocks = _blocks(model)
    assert sorted(blocks) == list(range(2 * (N - M)))
    # Base layer l: copy A's block l for l < n - m, else copy B's block for base layer l,
    # which is block (n - m) + (l - m).
    base = [blocks[layer if layer < N - M else (N - M) + (layer - M)] for layer in range(N)]
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    assert model.begin_step(K - 1) == []
    torch.testing.assert_close(model(ids), _plain_from(base, model)(ids), rtol=0, atol=1e-12)
    assert model.stats()[f"{PATH}.depth"] == N


def test_after_the_switch_it_is_the_solar_stack_of_the_base_weights() -> None:
    model = _dus_model()
    blocks = _blocks(model)
    base = [
        {k: v.detach().clone() for k, v in blocks[lay if lay < N - M else N - 2 * M + lay].items()}
        for lay in range(N)
    ]
    assert model.begin_step(K) == [PATH]
    assert model.begin_step(K + 1) == []  # once
    # SOLAR: [base 0..n-m-1] + [base m..n-1].
    solar = [base[lay] for lay in range(N - M)] + [base[lay] for lay in range(M, N)]
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(ids), _plain_from(solar, model)(ids), rtol=0, atol=1e-12)
    assert model.stats()[f"{PATH}.depth"] == 2 * (N - M)
    # The copied blocks are copies, not shared tensors: training one leaves the other.
    b = _blocks(model)
    assert all(b[M][s].data_ptr() != b[N - M][s].data_ptr() for s in b[M])


def test_adamw_skips_the_unused_blocks_before_the_switch() -> None:
    """Blocks without gradients keep their weights (weight decay included) and get no
    AdamW state, so no optimizer rebuild is needed at the switch."""
    spec = load(_text(_spec(N, {"drop": M, "at_step": 100}, weight_decay=0.5, lr=0.01)))
    model = archc.compile(spec, seed=0)
    opt = make_optimizer(model, model.graph, spec.train)
    unused = [
        p for i, blk in _blocks(model).items() if N - M <= i < 2 * N - 3 * M for p in blk.values()
    ]
    used = [p for i, blk in _blocks(model).items() if i < N - M for p in blk.values()]
    before = [p.detach().clone() for p in (*unused, *used)]
    ids = torch.randint(0, VOCAB, (4, 12))
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        model(ids).square().mean().backward()
        opt.step()
    assert all(p.grad is None and p not in opt.state for p in unused)
    assert all(torch.equal(p, q) for p, q in zip(unused, before, strict=False))
    assert any(not torch.equal(p, q) for p, q in zip(used, before[len(unused) :], strict=True))


TRAIN = {
    "task": {"name": "mqar", "vocab": VOCAB, "num_kv_pairs": 2},
    "seq_len": 16,
    "batch_size": 8,
    "steps": 8,
    "log_interval": 1,
    "eval_interval": 0,
    "checkpoint_interval": 5,
    "warmup": 2,
}


class Crash(Exception):
    pass


def test_resume_after_the_switch_restores_the_upscaled_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load(_text(_spec(N, {"drop": M, "at_step": K}, **TRAIN)))
    train(spec, tmp_path / "whole", show_progress=False)
    real_step = Trainer.train_step

    def crash_at_6(self: Trainer) -> tuple[float, float]:
        if self.step == 6:  # past the step-5 checkpoint, itself past the switch at K
            raise Crash
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", crash_at_6)
    with pytest.raises(Crash):
        train(spec, tmp_path / "cut", show_progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    fresh = Trainer(spec, tmp_path / "cut", show_progress=False)
    assert not bool(fresh.model.get_submodule(PATH).done)  # a new model is the base one
    assert fresh.prepare_dir(resume=True) == 5
    up = fresh.model.get_submodule(PATH)
    assert bool(up.done) and len(up.program()) == 2 * (N - M)
    summary = train(spec, tmp_path / "cut", resume=True, show_progress=False)
    assert summary.resumed_from == 5

    def rows(run: Path) -> dict[int, float]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(yaml.safe_load, lines) if "loss" in r}

    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")  # bit-exact on CPU


@pytest.mark.parametrize(
    ("upscale", "message"),
    [
        ({"drop": 3, "at_step": 1}, "0 < 2 \\* drop < n"),
        ({"drop": 0, "at_step": 1}, "drop"),
        ({"drop": 1}, "at_step"),
        ({"drop": 1, "at_step": 1, "every": 2}, "every"),
    ],
)
def test_bad_upscale_settings_are_located_errors(
    tmp_path: Path, upscale: dict[str, Any], message: str
) -> None:
    path = tmp_path / "dus.yaml"
    path.write_text(_text(_spec(N, upscale)))
    with pytest.raises(DiagnosticError, match=message) as err:
        archc.compile(path)
    assert "dus.yaml:" in str(err.value)
