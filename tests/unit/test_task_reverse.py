"""The reverse task (teacher-forced sequence reversal) and MQAR's repeat_context
(JRT-Prompt), checked against rows rebuilt here in plain Python."""

from __future__ import annotations

import pytest
import torch

from archc.runtime.tasks import IGNORE, TaskError, make_task


@pytest.mark.parametrize("seq_len", [16, 17, 20])
def test_reverse_rows_match_python_oracle(seq_len: int) -> None:
    n, alphabet = 8, 8
    task = make_task("reverse", {"length": n, "alphabet": alphabet}, seq_len)
    assert task.vocab == task.classes == alphabet + 2
    b = task.batch("train", 3, 5, seed=1)
    blank, mark = alphabet, alphabet + 1
    for x, y in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        src = x[:n]
        assert all(0 <= s < alphabet for s in src)
        rev = src[::-1]
        want_x = src + [mark] + rev + [blank] * seq_len
        assert x == want_x[:seq_len]
        want_y = [IGNORE] * n + rev + [IGNORE] * seq_len
        assert y == want_y[:seq_len]
        # Teacher forcing: each target step's input is the previous target (or the mark).
        for t in range(n, 2 * n):
            assert x[t] == (mark if t == n else y[t - 1])


def test_reverse_needs_room_for_the_reversal() -> None:
    with pytest.raises(TaskError) as err:
        make_task("reverse", {"length": 8}, 15)
    assert err.value.field == "seq_len" and "seq_len >= 16" in err.value.message


@pytest.mark.parametrize("repeat", [2, 3])
def test_mqar_repeat_context_repeats_the_same_tokens(repeat: int) -> None:
    k, t = 4, 64
    task = make_task("mqar", {"vocab": 64, "num_kv_pairs": k, "repeat_context": repeat}, t)
    b = task.batch("train", 0, 6, seed=5)
    ctx = 2 * k
    for x, y in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        pairs = x[:ctx]
        for r in range(1, repeat):  # literally the same tokens, copy after copy
            assert x[r * ctx : (r + 1) * ctx] == pairs
        keys, values = pairs[0::2], pairs[1::2]
        bound = dict(zip(keys, values, strict=True))
        queried = [i for i, v in enumerate(y) if v != IGNORE]
        # Targets only on the queries, all after the repeated context, one per key.
        assert len(queried) == k and min(queried) >= repeat * ctx
        assert sorted(x[i] for i in queried) == sorted(keys)
        assert all(y[i] == bound[x[i]] for i in queried)


def test_mqar_repeat_one_is_the_plain_task() -> None:
    plain = make_task("mqar", {"vocab": 64, "num_kv_pairs": 4}, 48).batch("eval", 2, 4, seed=9)
    once = make_task("mqar", {"vocab": 64, "num_kv_pairs": 4, "repeat_context": 1}, 48)
    b = once.batch("eval", 2, 4, seed=9)
    assert torch.equal(plain.inputs, b.inputs) and torch.equal(plain.targets, b.targets)


def test_mqar_repeat_context_needs_room() -> None:
    with pytest.raises(TaskError) as err:
        make_task("mqar", {"vocab": 64, "num_kv_pairs": 4, "repeat_context": 3}, 31)
    assert "seq_len >= 32" in err.value.message and "repeat_context" in err.value.hint
