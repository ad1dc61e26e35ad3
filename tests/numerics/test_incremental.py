"""Incremental (stateful) forward: a causal model run chunk by chunk, carrying its state,
equals one full-sequence call.

The oracle is the model's own full-sequence forward, itself checked against independent
references in test_oracles_*.py. Everything runs in float64 in eval mode, so chunked and
full outputs agree to rounding (~1e-15); a wrong mask, offset or cache shows at 1e-2.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from oracle_helpers import SPECS, max_err, randomize, spec_text

import archc
from archc.backends.torch.compiled import CompiledModel
from archc.cli import run

TIGHT = 1e-10
UNEVEN = [3, 1, 4, 2, 7, 1, 5]  # 23 tokens; the remainder runs as one more chunk


def chunked(model: torch.nn.Module, x: torch.Tensor, sizes: list[int]) -> tuple[Any, dict]:
    """Outputs of `model` over x (B, T, ...) fed in chunks of `sizes`, and the final state."""
    ys, state, i = [], None, 0
    while i < x.shape[1]:
        c = sizes[len(ys)] if len(ys) < len(sizes) else x.shape[1] - i
        y, state = model(x[:, i : i + c], state=state, return_state=True)
        ys.append(y)
        i += c
    return torch.cat(ys, dim=1), state


def check_chunked_equals_full(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        full = model(x)
        for sizes in ([1] * x.shape[1], UNEVEN):
            y, state = chunked(model, x, sizes)
            assert state["_pos"] == x.shape[1]
            err = max_err(y, full)
            assert err <= TIGHT, f"chunks {sizes[:8]}: max abs error {err:.3e}"


def prepared(model: CompiledModel) -> CompiledModel:
    """float64, eval mode, random parameters (zero biases and unit norms hide nothing)."""
    randomize(model, 0.2)
    return model.double().eval()


def token_ids(model: CompiledModel, t: int) -> torch.Tensor:
    return torch.randint(0, model.spec.vocab, (2, t))


# -- the spec library --------------------------------------------------------------------------


# Non-causal parts by design (an encoder; JRT's prefix read as a whole): they say why
# they cannot continue token by token.
NOT_STREAMING = {"smith-encoder.yaml": "future", "jrt.yaml": "prefix"}


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_library_spec_chunked_equals_full(name: str) -> None:
    model = archc.compile(SPECS / name, seed=0).double().eval()
    if name in NOT_STREAMING:
        ok, why = model.incremental_support()
        assert not ok and NOT_STREAMING[name] in why, why
        return
    assert model.incremental_support() == (True, "")
    # 40 tokens: longer than conv.yaml's attention window (32), so its cache is trimmed.
    check_chunked_equals_full(model, token_ids(model, 40))


# -- inline specs, one feature at a time ---------------------------------------------------------


def _attn_block(**attention: Any) -> list[Any]:
    return [
        {"residual": [{"norm": "rms"}, {"attention": {"heads": 4, **attention}}]},
        {"residual": [{"norm": "rms"}, {"mlp": {"mult": 2}}]},
    ]


INLINE: dict[str, list[Any]] = {
    "window3": _attn_block(window=3),
    "window1": _attn_block(window=1),
    "gqa": _attn_block(kv_heads=2),
    "mqa_rope_window4": _attn_block(kv_heads=1, pos="rope", window=4),
    "rope": _attn_block(pos="rope"),
    "learned_posenc": [{"posenc": {"kind": "learned", "max_len": 32}}, *_attn_block()],
    "sinusoidal_posenc": [{"posenc": {"kind": "sinusoidal", "max_len": 32}}, *_attn_block()],
    "conv_dilated": [{"conv1d": {"kernel": 3, "dilation": 2}}, {"act": "silu"}],
    "conv_depthwise_k4_dil3": [{"conv1d": {"kernel": 4, "dilation": 3, "groups": "depthwise"}}],
    "conv_k1": [{"conv1d": {"kernel": 1}}],
    "lstm2": [{"lstm": {"hidden": 12, "layers": 2}}],
    "gru2": [{"gru": {"hidden": 12, "layers": 2}}],
    "rnn2": [{"rnn": {"hidden": 12, "layers": 2, "act": "tanh"}}],
    "loop_all": [{"loop": {"steps": 3, "tie": "all", "body": _attn_block(pos="rope")}}],
    "loop_none": [{"loop": {"steps": 3, "tie": "none", "body": _attn_block(window=5)}}],
    "loop_cycle2": [
        {
            "loop": {
                "steps": 4,
                "tie": "cycle(2)",
                "body": [{"conv1d": {"kernel": 2}}, *_attn_block()],
            }
        }
    ],
    "nested_loops": [
        {
            "loop": {
                "steps": 2,
                "body": [
                    {"loop": {"steps": 3, "tie": "cycle(2)", "body": _attn_block(kv_heads=2)}}
                ],
            }
        }
    ],
    "hybrid": [
        {"conv1d": {"kernel": 3}},
        {"lstm": {"hidden": 16}},
        *_attn_block(pos="rope", window=6),
    ],
}


@pytest.mark.parametrize("name", list(INLINE))
def test_inline_chunked_equals_full(name: str) -> None:
    model = prepared(archc.compile(spec_text(INLINE[name], d_model=16), seed=1))
    assert model.incremental_support() == (True, "")
    check_chunked_equals_full(model, torch.randn(2, 23, 16, dtype=torch.float64))


def test_loop_state_has_one_entry_per_step() -> None:
    model = prepared(archc.compile(spec_text(INLINE["loop_cycle2"], d_model=16)))
    _, state = model(torch.randn(1, 5, 16, dtype=torch.float64), return_state=True)
    steps = sorted(k.rpartition("#")[2] for k in state if "sdpa" in k)
    assert steps == ["0", "1", "2", "3"]  # two weight copies, four steps: four caches


def test_window_cache_stays_bounded() -> None:
    model = prepared(archc.compile(spec_text(INLINE["window3"], d_model=16)))
    assert model.constant_state()
    _, state = chunked(model, torch.randn(1, 12, 16, dtype=torch.float64), [1] * 12)
    ((k, v),) = (e for key, e in state.items() if key != "_pos")
    assert k.shape[2] == v.shape[2] == 2  # window - 1 past positions


def test_position_table_end_is_a_clear_error() -> None:
    model = prepared(archc.compile(spec_text(INLINE["learned_posenc"], d_model=16)))
    _, state = model(torch.randn(1, 30, 16, dtype=torch.float64), return_state=True)
    with pytest.raises(ValueError, match="max_len 32"):
        model(torch.randn(1, 3, 16, dtype=torch.float64), state=state)


# -- models that cannot run incrementally --------------------------------------------------------

NOT_CAUSAL = {
    "attention_mask_none": ([{"attention": {"heads": 2, "mask": "none"}}], "attention.sdpa"),
    "bidirectional_lstm": ([{"lstm": {"hidden": 8, "bidirectional": True}}], "layers.0.lstm"),
    "conv_not_causal": ([{"conv1d": {"kernel": 3, "causal": False}}], "layers.0.conv1d"),
}


@pytest.mark.parametrize("name", list(NOT_CAUSAL))
def test_non_causal_model_refuses_a_state(name: str) -> None:
    layers, path = NOT_CAUSAL[name]
    model = archc.compile(spec_text([*layers, {"mlp": {"mult": 2}}], d_model=8))
    ok, why = model.incremental_support()
    assert not ok and path in why and "\n" not in why
    assert not model.constant_state()
    x = torch.randn(1, 6, 8)
    _, state = model(x[:, :4], return_state=True)  # a state can still be returned...
    with pytest.raises(ValueError, match="cannot continue") as err:
        model(x[:, 4:], state=state)  # ...but not continued from
    assert why in str(err.value)


def test_state_of_another_model_is_rejected() -> None:
    lstm = archc.compile(spec_text([{"lstm": {"hidden": 8}}], d_model=8))
    gru = archc.compile(spec_text([{"gru": {"hidden": 8}}], d_model=8))
    _, state = lstm(torch.randn(1, 3, 8), return_state=True)
    with pytest.raises(ValueError, match="do not belong"):
        gru(torch.randn(1, 1, 8), state=state)


# -- constant vs growing state -------------------------------------------------------------------


def _state_numel(state: dict[str, Any]) -> int:
    def numel(v: Any) -> int:
        return v.numel() if isinstance(v, torch.Tensor) else sum(numel(e) for e in v)

    return sum(numel(v) for k, v in state.items() if k != "_pos")


def test_lstm_state_is_constant_and_gpt_state_grows() -> None:
    lstm = archc.compile(SPECS / "lstm.yaml").eval()
    gpt = archc.compile(SPECS / "gpt.yaml").eval()
    assert lstm.constant_state() and not gpt.constant_state()
    ids = token_ids(lstm, 50)
    with torch.no_grad():
        sizes = {t: _state_numel(lstm(ids[:, :t], return_state=True)[1]) for t in (5, 50)}
        _, gpt5 = gpt(ids[:, :5], return_state=True)
        _, gpt50 = gpt(ids, return_state=True)
    assert sizes[5] == sizes[50] > 0
    assert _state_numel(gpt50) == 10 * _state_numel(gpt5)


# -- the standalone model.py ---------------------------------------------------------------------


def test_emitted_model_runs_chunked(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    messages: list[str] = []
    spec = SPECS / "looped.yaml"  # loop + rope + causal attention
    assert run(["compile", str(spec), "--emit", "torch", "-o", str(out)], messages.append) == 0
    found = importlib.util.spec_from_file_location("emitted_looped_model", out)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)

    compiled = archc.compile(spec, seed=3).double().eval()
    emitted = module.Model().double().eval()
    emitted.load_state_dict(compiled.state_dict())
    assert emitted.incremental_support() == (True, "") and not emitted.constant_state()
    ids = token_ids(compiled, 12)
    with torch.no_grad():
        full = compiled(ids)
        y, _ = chunked(emitted, ids, [5, 1, 1, 3])
    assert max_err(y, full) <= TIGHT
