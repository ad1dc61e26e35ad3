"""Built-in tasks: targets checked against plain-Python oracles, determinism, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archc.frontend.tasks import TASK_PARAMS, MqarParams, int_params, task_names
from archc.runtime.tasks import IGNORE, TASKS, Batch, TaskError, make_task

CORPUS = Path(__file__).resolve().parents[2].parent / "shared/data/tinyshakespeare.txt"
SYNTHETIC = ["mqar", "parity", "dms", "copy", "selective-copy", "reverse"]


@pytest.fixture(scope="module")
def corpus() -> Path:
    if not CORPUS.is_file():
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


def supervised(targets: torch.Tensor) -> torch.Tensor:
    return targets != IGNORE


# --- schemas ----------------------------------------------------------------------------


def test_schema_names_and_int_params() -> None:
    assert task_names() == sorted(
        ["mqar", "parity", "dms", "copy", "selective-copy", "reverse", "text"]
    )
    assert set(TASKS) == set(TASK_PARAMS)
    assert int_params("parity") == ["n"]
    assert int_params("mqar") == ["vocab", "num_kv_pairs", "repeat_context"]  # not the bool
    assert int_params("text") == []
    assert TASK_PARAMS["parity"].multi_head == ("n",)
    assert TASK_PARAMS["mqar"].multi_head == ()


def test_schema_rejects_unknown_and_out_of_bounds() -> None:
    with pytest.raises(ValueError):
        TASK_PARAMS["parity"].model_validate({"m": 3})
    with pytest.raises(ValueError):
        TASK_PARAMS["parity"].model_validate({"n": 0})
    with pytest.raises(ValueError):
        TASK_PARAMS["text"].model_validate({"val_fraction": 1.0})
    with pytest.raises(ValueError, match="distinct keys"):
        MqarParams(vocab=8, num_kv_pairs=4)  # only keys 1..3 exist


def test_frontend_tasks_does_not_import_torch() -> None:
    code = "import sys, archc.frontend.tasks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- shapes, ranges, determinism --------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_shapes_and_ranges(name: str) -> None:
    task = make_task(name, None, 64)
    b = task.batch("train", 0, 5, seed=1)
    assert b.inputs.shape == b.targets.shape == (5, 64)
    assert b.inputs.dtype == b.targets.dtype == torch.int64
    assert 0 <= b.inputs.min() and b.inputs.max() < task.vocab
    sup = b.targets[supervised(b.targets)]
    assert sup.numel() > 0 and 0 <= sup.min() and sup.max() < task.classes


@pytest.mark.parametrize("name", SYNTHETIC)
def test_batches_are_pure_functions_of_their_arguments(name: str) -> None:
    task = make_task(name, None, 64)
    a = task.batch("train", 7, 8, seed=3)
    # A fresh task object (a resumed run) regenerates the same batch 7.
    again = make_task(name, None, 64).batch("train", 7, 8, seed=3)
    assert torch.equal(a.inputs, again.inputs) and torch.equal(a.targets, again.targets)
    for other in (
        task.batch("train", 8, 8, seed=3),
        task.batch("train", 7, 8, seed=4),
        task.batch("eval", 7, 8, seed=3),
    ):
        assert not torch.equal(a.inputs, other.inputs)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_data_parallel_shards_tile_the_global_batch(name: str) -> None:
    task = make_task(name, None, 40)
    world, per_rank = 4, 3
    full = task.batch("train", 5, world * per_rank, seed=0)
    # Each rank builds the global batch itself and keeps its own rows.
    shards = [
        task.batch("train", 5, world * per_rank, seed=0).rows(r * per_rank, (r + 1) * per_rank)
        for r in range(world)
    ]
    assert torch.equal(torch.cat([s.inputs for s in shards]), full.inputs)
    assert torch.equal(torch.cat([s.targets for s in shards]), full.targets)
    assert len({tuple(row.tolist()) for row in full.inputs}) == world * per_rank


@pytest.mark.parametrize("name", SYNTHETIC)
def test_eval_batches_are_fixed_and_differ_from_train(name: str) -> None:
    task = make_task(name, None, 40)
    first = list(task.eval_batches(4, None, seed=0))
    assert len(first) == 8
    assert len(list(task.eval_batches(4, 3, seed=0))) == 3
    second = list(task.eval_batches(4, None, seed=0))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(first, second, strict=True))
    train = {tuple(r.tolist()) for i in range(8) for r in task.batch("train", i, 4, 0).inputs}
    assert not any(tuple(r.tolist()) in train for b in first for r in b.inputs)


def test_bad_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        make_task("parity", None, 8).batch("test", 0, 2, 0)


# --- parity and dms ---------------------------------------------------------------------


def parity_oracle(bits: list[int], n: int) -> list[int]:
    out = []
    for t in range(len(bits)):
        out.append(IGNORE if t < n - 1 else sum(bits[t - n + 1 : t + 1]) % 2)
    return out


def dms_oracle(bits: list[int], n: int) -> list[int]:
    return [IGNORE if t < n else int(bits[t] == bits[t - n]) for t in range(len(bits))]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_parity_matches_python_oracle(n: int) -> None:
    b = make_task("parity", {"n": n}, 40).batch("train", 0, 6, seed=n)
    assert set(b.inputs.unique().tolist()) <= {0, 1}
    for row, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        assert tgt == parity_oracle(row, n)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_dms_matches_python_oracle(n: int) -> None:
    b = make_task("dms", {"n": n}, 40).batch("train", 0, 6, seed=n)
    for row, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        assert tgt == dms_oracle(row, n)


def test_relabel_gives_other_n_from_same_inputs() -> None:
    task = make_task("parity", {"n": 2}, 30)
    b = task.batch("train", 0, 4, seed=0)
    relabelled = task.relabel(b.inputs, n=5)
    for row, tgt in zip(b.inputs.tolist(), relabelled.tolist(), strict=True):
        assert tgt == parity_oracle(row, 5)
    assert task.params.n == 2  # relabel does not change the task
    dms = make_task("dms", {"n": 1}, 30)
    d = dms.batch("train", 0, 4, seed=0)
    assert dms.relabel(d.inputs, n=4).tolist() == [dms_oracle(r, 4) for r in d.inputs.tolist()]


def test_relabel_is_only_for_multi_head_params() -> None:
    mqar = make_task("mqar", None, 64)
    with pytest.raises(TypeError):
        mqar.relabel(mqar.batch("train", 0, 2, 0).inputs, num_kv_pairs=4)
    parity = make_task("parity", None, 16)
    with pytest.raises(TypeError):
        parity.relabel(parity.batch("train", 0, 2, 0).inputs, m=4)
    with pytest.raises(TaskError) as info:
        parity.relabel(parity.batch("train", 0, 2, 0).inputs, n=0)
    assert info.value.field == "task.n"


def test_with_params_copies_with_changes() -> None:
    task = make_task("parity", {"n": 2}, 16)
    harder = task.with_params(n=4)
    assert (harder.params.n, task.params.n, harder.seq_len) == (4, 2, 16)
    b = harder.batch("train", 0, 3, 0)
    assert b.targets.tolist() == [parity_oracle(r, 4) for r in b.inputs.tolist()]
    with pytest.raises(TaskError) as info:
        task.with_params(n=17)  # no supervised position left in 16 steps
    assert info.value.field == "seq_len"
    with pytest.raises(TaskError) as info:
        task.with_params(bogus=1)
    assert info.value.field == "task.bogus"


# --- mqar -------------------------------------------------------------------------------


def test_mqar_structure() -> None:
    vocab, k, t = 64, 6, 64
    task = make_task("mqar", {"vocab": vocab, "num_kv_pairs": k}, t)
    b = task.batch("train", 0, 32, seed=0)
    for row, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        keys, values = row[0 : 2 * k : 2], row[1 : 2 * k : 2]
        assert len(set(keys)) == k and len(set(values)) == k
        assert all(1 <= x < vocab // 2 for x in keys)
        assert all(vocab // 2 <= v < vocab for v in values)
        kv = dict(zip(keys, values, strict=True))
        where = [i for i, y in enumerate(tgt) if y != IGNORE]
        assert len(where) == k
        assert all(i >= 2 * k and (i - 2 * k) % 2 == 0 for i in where)
        # Every key is queried once, and each query's label is the value bound to it.
        assert sorted(row[i] for i in where) == sorted(keys)
        assert all(tgt[i] == kv[row[i]] for i in where)


def test_mqar_filler() -> None:
    plain = make_task("mqar", {"vocab": 32, "num_kv_pairs": 4, "random_non_queries": False}, 32)
    b = plain.batch("train", 0, 8, 0)
    filler = ~supervised(b.targets)
    filler[:, :8] = False
    assert (b.inputs[filler] == 0).all()
    noisy = make_task("mqar", {"vocab": 32, "num_kv_pairs": 4}, 32).batch("train", 0, 8, 0)
    assert len(noisy.inputs[filler].unique()) > 10


def query_gaps(power_a: float) -> list[int]:
    """Gap index of every query in a large batch: position = 2K + 2 * gap."""
    k, t = 4, 132  # gaps range over (132 - 8) // 2 = 62 slots
    task = make_task("mqar", {"vocab": 256, "num_kv_pairs": k, "power_a": power_a}, t)
    cols = supervised(task.batch("train", 0, 500, seed=0).targets).nonzero()[:, 1]
    return ((cols - 2 * k) // 2).tolist()


def test_mqar_gaps_follow_a_power_law() -> None:
    gaps = query_gaps(0.01)
    assert min(gaps) >= 0 and max(gaps) < 62
    short = sum(g < 62 // 4 for g in gaps)
    long = sum(g >= 3 * 62 // 4 for g in gaps)
    assert short > 2 * long
    uniform = query_gaps(1.0)  # power_a = 1 is uniform: mean near 30.5
    assert abs(sum(uniform) / len(uniform) - 30.5) < 2.0
    assert sum(gaps) / len(gaps) < sum(uniform) / len(uniform) - 5


# --- copy and selective copy ------------------------------------------------------------


def test_copy_targets_are_the_data_in_order() -> None:
    n, alphabet, t = 5, 6, 14
    task = make_task("copy", {"length": n, "alphabet": alphabet}, t)
    assert task.vocab == task.classes == alphabet + 2
    blank, mark = alphabet, alphabet + 1
    b = task.batch("train", 0, 10, seed=0)
    for row, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        data = row[:n]
        assert all(0 <= x < alphabet for x in data)
        assert row[n] == mark and row[n + 1 :] == [blank] * (t - n - 1)
        assert [y for y in tgt if y != IGNORE] == data
        assert [i for i, y in enumerate(tgt) if y != IGNORE] == list(range(n + 1, 2 * n + 1))


def test_selective_copy_targets_are_the_data_in_order() -> None:
    n, alphabet, t = 4, 5, 20
    task = make_task("selective-copy", {"tokens": n, "alphabet": alphabet}, t)
    blank, mark = alphabet, alphabet + 1
    b = task.batch("train", 0, 50, seed=0)
    positions = set()
    for row, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        body = row[: t - n]
        data = [x for x in body if x != blank]
        where = [i for i, x in enumerate(body) if x != blank]
        positions.update(where)
        assert len(data) == n and all(0 <= x < alphabet for x in data)
        assert row[t - n :] == [mark] * n
        assert tgt[: t - n] == [IGNORE] * (t - n) and tgt[t - n :] == data
    assert len(positions) > t - n - 3  # data lands all over the body, not in a fixed place


# --- text -------------------------------------------------------------------------------


def test_text_windows_are_slices_of_the_file(corpus: Path) -> None:
    raw = corpus.read_bytes()
    task = make_task("text", None, 48, corpus)
    assert (task.vocab, task.classes, task.is_text) == (256, 256, True)
    split = len(raw) - round(len(raw) * 0.1)
    train_text, eval_text = raw[:split], raw[split:]
    b = task.batch("train", 3, 8, seed=0)
    for inp, tgt in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
        window = bytes([*inp, tgt[-1]])
        assert inp[1:] == tgt[:-1]
        assert window in train_text
    e = task.batch("eval", 0, 8, seed=0)
    for inp, tgt in zip(e.inputs.tolist(), e.targets.tolist(), strict=True):
        assert bytes([*inp, tgt[-1]]) in eval_text


def test_text_eval_covers_held_out_part_once(corpus: Path) -> None:
    t = 1000
    task = make_task("text", {"val_fraction": 0.05}, t, corpus)
    held = task.eval_bytes.numel()
    batches = list(task.eval_batches(16, None, seed=0))
    assert all(b.inputs.shape[0] == 16 for b in batches[:-1]) and batches[-1].inputs.shape[0] <= 16
    assert (held - 1) % t, "the test needs a partial last window"
    raw = corpus.read_bytes()
    held_text = raw[len(raw) - held :]
    # The last window ends at the file's end; masking its targets leaves its inputs intact.
    assert bytes(batches[-1].inputs[-1].tolist()) == held_text[held - 1 - t : held - 1]
    assert bytes(batches[0].inputs[0].tolist()) == held_text[:t]
    scored = sum(int(supervised(b.targets).sum()) for b in batches)
    assert scored == held - 1  # every held-out byte but the first, exactly once
    # Reassembling the scored targets in order gives back the held-out bytes.
    ids = torch.cat([b.targets[supervised(b.targets)] for b in batches])
    assert bytes(ids.tolist()) == held_text[1:]
    assert len(list(task.eval_batches(16, 2, seed=0))) == 2


def test_text_with_params_and_codec(corpus: Path) -> None:
    task = make_task("text", None, 32, corpus)
    other = task.with_params(val_fraction=0.2)
    assert other.eval_bytes.numel() > task.eval_bytes.numel()
    ids = task.encode("héllo")
    assert ids.tolist() == list("héllo".encode())
    assert task.decode(ids.tolist()) == "héllo"
    assert task.decode([0xFF, 104]) == "\ufffdh"
    assert task.encode("").numel() == 0


def test_text_errors(tmp_path: Path) -> None:
    cases = {
        "no data": None,
        "missing": tmp_path / "nope.txt",
        "directory": tmp_path,
    }
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    cases["empty"] = empty
    for why, data in cases.items():
        with pytest.raises(TaskError) as info:
            make_task("text", None, 8, data)
        assert info.value.field == "data", why
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 200)  # 180 train bytes, 20 held out
    assert make_task("text", None, 19, small).eval_bytes.numel() == 20
    with pytest.raises(TaskError) as info:
        make_task("text", None, 20, small)
    assert info.value.field == "seq_len" and "20 bytes" in info.value.message
    assert info.value.hint is not None and "19" in info.value.hint


# --- other errors and codecs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "seq_len"),
    [
        ("copy", {"length": 8}, 16),
        ("selective-copy", {"tokens": 8}, 15),
        ("mqar", {"num_kv_pairs": 8}, 31),
        ("parity", {"n": 5}, 4),
        ("dms", {"n": 5}, 5),
    ],
)
def test_seq_len_too_short(name: str, params: dict[str, int], seq_len: int) -> None:
    with pytest.raises(TaskError) as info:
        make_task(name, params, seq_len)
    assert info.value.field == "seq_len"
    make_task(name, params, seq_len + 1)  # one more step is enough


def test_bad_params_and_names() -> None:
    with pytest.raises(TaskError) as info:
        make_task("mqar", {"vocab": 8, "num_kv_pairs": 4}, 64)
    assert info.value.field == "task.num_kv_pairs"
    with pytest.raises(TaskError) as info:
        make_task("parity", {"n": 0}, 8)
    assert info.value.field == "task.n"
    with pytest.raises(TaskError) as info:
        make_task("parityy", None, 8)
    assert info.value.field == "task"


def test_integer_codec() -> None:
    task = make_task("copy", {"alphabet": 4}, 40)
    assert task.encode(" 0 1\n5 ").tolist() == [0, 1, 5]
    assert task.decode([3, 0, 5]) == "3 0 5"
    for bad in ("6", "-1", "a"):
        with pytest.raises(TaskError):
            task.encode(bad)


def test_batch_helpers() -> None:
    b = Batch(torch.arange(6).view(3, 2), torch.zeros(3, 2, dtype=torch.long))
    assert b.rows(1, 3).inputs.tolist() == [[2, 3], [4, 5]]
    assert b.to("cpu").inputs.device.type == "cpu"
