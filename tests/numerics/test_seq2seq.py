"""The seq2seq component against two torch nn.LSTM modules run by hand in float64.

Oracle (Sutskever et al. 2014): an encoder nn.LSTM runs over the first `source` steps
from a zero state; a second nn.LSTM with its own weights starts from the encoder's final
(h, c) and runs over the remaining steps. Weights are copied from the compiled model by
name. Also: the target part is causal (changing step t never changes outputs before t),
while every decoder output depends on every source token.
"""

from __future__ import annotations

import pytest
import torch
from oracle_helpers import assert_close, run_in_chunks, spec_text
from torch import nn

import archc

PATH = "layers.0.seq2seq"
D, H, S = 6, 10, 5


def _model(layers: int = 2) -> torch.nn.Module:
    spec = spec_text([{"seq2seq": {"source": S, "hidden": H, "layers": layers}}], d_model=D)
    return archc.compile(spec, seed=7).double().eval()


def _oracle(model: torch.nn.Module, x: torch.Tensor, layers: int) -> torch.Tensor:
    sd = model.state_dict()
    enc = nn.LSTM(D, H, num_layers=layers, batch_first=True).double()
    dec = nn.LSTM(D, H, num_layers=layers, batch_first=True).double()
    for side, ref in (("enc", enc), ("dec", dec)):
        pre = f"{PATH}.{side}."
        ref.load_state_dict({k.removeprefix(pre): v for k, v in sd.items() if k.startswith(pre)})
    with torch.no_grad():
        y_src, (h, c) = enc(x[:, :S])
        y_tgt, _ = dec(x[:, S:], (h, c))
    return torch.cat([y_src, y_tgt], dim=1)


@pytest.mark.parametrize("layers", [1, 2])
def test_seq2seq_equals_two_lstms_float64(layers: int) -> None:
    model = _model(layers)
    # Both sides have their own weights: the state dict holds two full LSTMs.
    keys = set(model.state_dict())
    assert {f"{PATH}.enc.weight_hh_l0", f"{PATH}.dec.weight_hh_l0"} <= keys
    x = torch.randn(3, 12, D, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    assert y.dtype == torch.float64 and y.shape == (3, 12, H)
    assert_close(y, _oracle(model, x, layers), tol=1e-12)


def test_seq2seq_decoder_starts_from_the_encoder_state() -> None:
    """A decoder from a zero state (what a plain LSTM stack would do) differs."""
    model = _model(1)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    sd = model.state_dict()
    dec = nn.LSTM(D, H, batch_first=True).double()
    pre = f"{PATH}.dec."
    dec.load_state_dict({k.removeprefix(pre): v for k, v in sd.items() if k.startswith(pre)})
    with torch.no_grad():
        cold, _ = dec(x[:, S:])
        y = model(x)
    assert (y[:, S:] - cold).abs().max() > 1e-3


def test_seq2seq_target_is_causal_source_is_fully_visible() -> None:
    model = _model(2)
    x = torch.randn(2, 12, D, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        for t in range(S, 12):  # a later target token never reaches earlier outputs
            x2 = x.clone()
            x2[:, t] += 1.0
            y2 = model(x2)
            assert torch.equal(y2[:, :t], base[:, :t])
            assert (y2[:, t] - base[:, t]).abs().max() > 1e-6
        for t in range(S):  # every source token reaches every decoder output
            x2 = x.clone()
            x2[:, t] += 1.0
            y2 = model(x2)
            assert ((y2[:, S:] - base[:, S:]).abs().amax(dim=-1) > 1e-9).all()


def test_seq2seq_runs_in_chunks_across_the_handoff() -> None:
    """Chunked (incremental) runs carry (h, c) and switch LSTMs at `source`, whatever
    the chunk boundaries."""
    spec = spec_text(
        ["embed", {"seq2seq": {"source": S, "hidden": H, "layers": 2}}, "head"],
        d_model=D,
        vocab=11,
    )
    model = archc.compile(spec, seed=3).double().eval()
    ids = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        whole = model(ids)
        for sizes in ((3, 4, 5), (1,) * 12, (5, 7), (7, 5)):
            y, _ = run_in_chunks(model, ids, sizes)
            assert_close(y, whole, tol=1e-12)
