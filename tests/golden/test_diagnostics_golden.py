"""Golden tests of `archc check` diagnostics on malformed specs.

Each case is a file `tests/golden/diagnostics/NN-short-name.yaml` (or `.arch`); the
expected stderr of ``archc check CASE`` (run from the repo root with the relative path)
sits next to it as `NN-short-name.err`. An optional `NN-short-name.args` lists
command-line overrides, one per line, appended after the path. Files in subfolders
(`helpers/`) are only used by other cases (e.g. as `extends` targets).

Inputs too big or too odd to commit (10,000-deep nesting, a 50 MB file, binary bytes,
empty files) are generated into tmp_path at run time; their goldens live in
`diagnostics/generated/NAME.err` and print the bare file name (cwd = tmp_path).

Regenerate every golden after an intended change in a message:

    ARCHC_UPDATE_GOLDEN=1 pytest tests/golden/test_diagnostics_golden.py

then read the diff: a golden is only as good as the review of its text.

`QUALITY` lists messages known to be misleading or mislocated; the golden holds the
current text so any change shows up, and a strict xfail asserts what the message
should say. When one is fixed its xfail starts to pass: remove it and regenerate.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archc.cli import run

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = Path(__file__).resolve().parent / "diagnostics"
GENERATED_DIR = CASES_DIR / "generated"
UPDATE = os.environ.get("ARCHC_UPDATE_GOLDEN", "").strip() not in ("", "0")
CANARY = Path("/tmp/archc-pwned")  # the python-tag and ${...} cases try to create it

CASES = sorted(
    p for p in CASES_DIR.glob("[0-9][0-9]-*") if p.suffix in (".yaml", ".arch") and p.is_file()
)

# A message line: `path:line:col: error|note: text`; anything else is indented two spaces
# (the quoted source line, the caret, a hint).
MESSAGE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|note): \S")


def _generated() -> dict[str, Callable[[], bytes]]:
    head = b"model: deep\nd_model: 4\nlayers: "
    return {
        "deep-10000.yaml": lambda: head + b"[" * 10_000 + b"]" * 10_000 + b"\n",
        "deep-10000-map.yaml": lambda: (
            b"model: deep\nd_model: 4\nx: "
            + b"{a: " * 10_000
            + b"1"
            + b"}" * 10_000
            + b"\nlayers: [norm]\n"
        ),
        "deep-10000.arch": lambda: (
            b"model deep(d_model=4) {\n" + b"seq { " * 10_000 + b"norm" + b" }" * 10_000 + b"\n}\n"
        ),
        "huge-50mb.yaml": lambda: (
            b"model: big\nd_model: 4\nlayers: [norm]\n"
            + b"# padding padding padding padding padding padding padding padding\n" * 800_000
        ),
        "binary.yaml": lambda: bytes((i * 131 + 7) % 256 for i in range(4096)),
        "latin1.yaml": lambda: "model: café\nd_model: 4\nlayers: [norm]\n".encode("latin-1"),
        "empty.yaml": lambda: b"",
        "empty.arch": lambda: b"",
        "comments-only.yaml": lambda: b"# nothing but a comment\n\n",
    }


GENERATED = _generated()


def _check(args: list[str]) -> tuple[int, str, float]:
    out: list[str] = []
    t0 = time.perf_counter()
    code = run(["check", *args], handler=out.append)
    return code, "".join(t + "\n" for t in out), time.perf_counter() - t0


def _overrides(case: Path) -> list[str]:
    args = case.with_suffix(".args")
    if not args.exists():
        return []
    return [line for line in args.read_text().splitlines() if line.strip()]


def _run_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, float]:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ARCHC_DEBUG", raising=False)
    return _check([case.relative_to(REPO).as_posix(), *_overrides(case)])


def _assert_well_formed(text: str) -> None:
    assert text.strip(), "no diagnostics printed"
    assert "Traceback" not in text
    assert "internal error" not in text
    lines = text.rstrip("\n").split("\n")
    last: dict[str, tuple[int, int]] = {}
    errors = 0
    for line in lines:
        if line.startswith("  "):
            continue  # source excerpt, caret or hint
        m = MESSAGE.match(line)
        assert m, f"not a `path:line:col: error|note:` message line: {line!r}"
        errors += m["sev"] == "error"
        # Diagnostics of one file come in source order.
        here = (int(m["line"]), int(m["col"]))
        assert here >= last.get(m["file"], (0, 0)), f"out of order: {line!r}"
        last[m["file"]] = here
    assert errors >= 1
    assert not lines[0].startswith("  ")


def _compare(text: str, golden: Path) -> None:
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
        return
    assert golden.exists(), f"missing golden {golden}; run with ARCHC_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.fixture(autouse=True)
def _no_canary() -> Iterator[None]:
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists(), "a spec executed code!"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, text, _ = _run_case(case, monkeypatch)
    assert code == 2, text
    _assert_well_formed(text)
    rel = case.relative_to(REPO).as_posix()
    files = {m["file"] for m in map(MESSAGE.match, text.splitlines()) if m}
    if case.name not in QUALITY:  # known-misplaced ones are tracked by test_message_quality
        assert files & {rel, "<override 1>"}, f"no diagnostic names {rel}: {files}"
    _compare(text, case.with_suffix(".err"))


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / name).write_bytes(GENERATED[name]())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARCHC_DEBUG", raising=False)
    code, text, seconds = _check([name])
    assert code == 2, text
    _assert_well_formed(text)
    assert text.startswith(f"{name}:1:") or text.startswith(f"{name}:")
    assert seconds < 30, f"took {seconds:.1f}s"  # a safety net against blow-ups, not a benchmark
    _compare(text, GENERATED_DIR / f"{name}.err")


def test_case_coverage() -> None:
    """The suite keeps covering every kind of error (at least 20 committed cases)."""
    names = [c.name for c in CASES]
    assert len(names) >= 20
    for needle in (
        "yaml",
        "dsl",
        "unknown-top-key",
        "unknown-component",
        "unknown-param",
        "wrong-type",
        "out-of-range",
        "undeclared-define",
        "recursive-define",
        "recursive-extends",
        "extends-missing",
        "heads-not-dividing",
        "residual-width",
        "loop-width",
        "tied-head-no-embed",
        "python-tag",
        "alias-bomb",
        "interp-unknown-name",
        "interp-div-zero",
        "interp-disallowed",
        "many-errors",
        "override-unknown-path",
        "override-bad-value",
        "nested-repeat-bomb",
        "train-unknown-key",
        "train-unknown-task",
        "train-bad-task-param",
        "train-curriculum-step",
        "train-curriculum-param",
        "train-curriculum-multi-head",
        "train-override-unknown-key",
        "train-betas-out-of-range",
    ):
        assert any(needle in n for n in names), needle


def test_many_errors_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every independent mistake of a file is reported in one run, in line order."""
    for name, lines in (
        ("24-many-errors.yaml", [4, 7, 8, 9, 10, 11]),
        ("25-dsl-many-errors.arch", [3, 4, 5, 6, 7]),
    ):
        _, text, _ = _run_case(CASES_DIR / name, monkeypatch)
        found = [int(m["line"]) for m in map(MESSAGE.match, text.splitlines()) if m]
        assert found == lines, text


def test_alias_bomb_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text, seconds = _run_case(CASES_DIR / "20-alias-bomb.yaml", monkeypatch)
    assert code == 2
    assert "expands to more than" in text
    assert seconds < 15, f"alias bomb took {seconds:.1f}s to reject"


def test_nested_repeat_is_rejected_before_unrolling(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text, seconds = _run_case(CASES_DIR / "33-nested-repeat-bomb.yaml", monkeypatch)
    assert code == 2
    assert "at least 10000000000 IR nodes" in text
    assert seconds < 15, f"nested repeat took {seconds:.1f}s to reject"


def test_disallowed_interp_does_not_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    for name in ("19-python-tag.yaml", "23-interp-disallowed.yaml"):
        code, _, _ = _run_case(CASES_DIR / name, monkeypatch)
        assert code == 2
    assert calls == []


# -- messages that should be better (see the module docstring) -----------------------------


def _lines_of(text: str) -> list[int]:
    return [int(m["line"]) for m in map(MESSAGE.match, text.splitlines()) if m]


QUALITY: dict[str, tuple[str, Callable[[str], bool]]] = {
    "20-alias-bomb.yaml": (
        "the alias bomb is located at the anchored '\"lol\"' on line 4, not where the "
        "expansion blows up (the aliases on line 9)",
        lambda text: _lines_of(text) == [9],
    ),
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=QUALITY[n][0])) for n in QUALITY],
)
def test_message_quality(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, text, _ = _run_case(CASES_DIR / name, monkeypatch)
    assert QUALITY[name][1](text), text
