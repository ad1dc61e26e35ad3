"""Ragged packing (backends/torch/modules/ragged.py): pack/unpack and the padded forms
are exact inverses over random boundary masks, and the one-gather `select_padded`
equals packing then padding."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from archc.backends.torch.modules.ragged import (
    chunk_of,
    pack,
    padded_to_ragged,
    ragged_to_padded,
    select_padded,
    unpack,
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    b = draw(st.integers(1, 4))
    t = draw(st.integers(1, 12))
    d = draw(st.integers(1, 3))
    bits = draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
    mask = torch.tensor(bits, dtype=torch.bool).view(b, t)
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, mask


@settings(max_examples=50, deadline=None, derandomize=True)
@given(batches())
def test_pack_unpack_are_inverses(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = case
    values, offsets = pack(x, mask)
    # offsets: row b owns values[offsets[b]:offsets[b+1]], its selected rows in time order
    assert offsets[0] == 0 and int(offsets[-1]) == int(mask.sum()) == values.shape[0]
    for b in range(x.shape[0]):
        expect = [x[b, t] for t in range(x.shape[1]) if mask[b, t]]
        got = values[offsets[b] : offsets[b + 1]]
        assert len(expect) == got.shape[0]
        for e, g in zip(expect, got, strict=True):
            assert torch.equal(e, g)
    # unpack(pack(x)) is x on the mask and zero elsewhere; pack(unpack(v)) is v
    back = unpack(values, offsets, mask)
    assert torch.equal(back, torch.where(mask[..., None], x, torch.zeros_like(x)))
    again, offsets2 = pack(back, mask)
    assert torch.equal(again, values) and torch.equal(offsets2, offsets)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(batches())
def test_padded_form_round_trips(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = case
    values, offsets = pack(x, mask)
    padded, lengths = ragged_to_padded(values, offsets)
    assert torch.equal(lengths, mask.sum(1))
    assert padded.shape[1] == max(int(lengths.max()), 1)
    for b in range(x.shape[0]):
        assert torch.equal(padded[b, : lengths[b]], x[b][mask[b]])
        assert not padded[b, lengths[b] :].any()  # zeros past each length
    v2, o2 = padded_to_ragged(padded, lengths)
    assert torch.equal(v2, values) and torch.equal(o2, offsets)
    # the one-gather form used by hier equals packing then padding
    sel, sel_len = select_padded(x, mask)
    assert torch.equal(sel, padded) and torch.equal(sel_len, lengths)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(batches())
def test_chunk_of_is_the_last_start_at_or_before(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, starts = case
    starts = starts.clone()
    starts[:, 0] = True
    ids = chunk_of(starts)
    for b in range(starts.shape[0]):
        seen = -1
        for t in range(starts.shape[1]):
            seen += int(starts[b, t])
            assert ids[b, t] == seen
