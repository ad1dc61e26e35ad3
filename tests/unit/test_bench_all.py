"""`archc bench all`: suites run in turn into one report; a failing suite is reported, not fatal."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from archc.bench import all as bench_all


def _suite(mp: pytest.MonkeyPatch, name: str, main: Callable[[list[str]], None]) -> str:
    """A throw-away suite module `name` (for this test only) whose main is `main`."""
    module = types.ModuleType(name)
    module.main = main  # type: ignore[attr-defined]
    mp.setitem(sys.modules, name, module)
    return name


def _good(argv: list[str]) -> None:
    print("ratio 1.25x", argv)


def _bad(argv: list[str]) -> None:
    raise RuntimeError("boom")


def _skip(argv: list[str]) -> None:
    raise SystemExit("no data file")


def _plot(argv: list[str]) -> None:
    Path(argv[argv.index("--plot") + 1]).write_bytes(b"x")


def test_report_holds_every_suite_and_survives_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suites = {
        n: _suite(monkeypatch, f"_bench_{n}", f)
        for n, f in (("good", _good), ("bad", _bad), ("skip", _skip), ("plot", _plot))
    }
    monkeypatch.setattr(bench_all, "SUITES", suites)
    monkeypatch.setattr(bench_all, "PLOT_ARGS", {"plot": ["--plot", "{out}/curve.png"]})
    bench_all.main(["--quick", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert "| good | ok |" in report and "ratio 1.25x ['--quick']" in report
    assert "| bad | failed |" in report and "RuntimeError: boom" in report
    assert "| skip | skipped: no data file |" in report
    assert "![curve](curve.png)" in report and (tmp_path / "curve.png").is_file()
    assert "| torch |" in report and "| archc commit |" in report
    assert "ratio 1.25x" in capsys.readouterr().out  # echoed while it runs


def test_unknown_suite_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown suite"):
        bench_all.main(["--only", "nope", "--out", str(tmp_path)])
