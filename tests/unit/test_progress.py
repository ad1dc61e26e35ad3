"""Progress display: a bar redrawn in place on a terminal, plain lines otherwise;
metrics.jsonl rows survive a torn last line."""

from __future__ import annotations

import io
from pathlib import Path

from archc.runtime.progress import MetricsLog, Progress, read_metrics


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_redrawn_in_place() -> None:
    out = FakeTerminal()
    bar = Progress(total=4, every=2, stream=out)
    bar.last_draw = -1.0
    bar.update(1, {"loss": "1.0"})
    bar.message("resuming")
    bar.last_draw = -1.0
    bar.update(4, {"loss": "0.5"})
    bar.close()
    text = out.getvalue()
    assert text.count("\r[") == 2 and "[######------------------] 1/4" in text
    assert "[########################] 4/4  loss 0.5" in text
    assert "\r\x1b[Kresuming\n" in text and text.endswith("\n")


def test_pipe_gets_periodic_plain_lines() -> None:
    out = io.StringIO()
    bar = Progress(total=5, every=2, stream=out)
    for step in range(1, 6):
        bar.update(step, {"loss": f"{1 / step:.2f}"})
    bar.close()
    assert out.getvalue().splitlines() == [
        "step 2/5  loss 0.50",
        "step 4/5  loss 0.25",
        "step 5/5  loss 0.20",
    ]
    assert "\r" not in out.getvalue()


def test_metrics_truncate_and_torn_lines(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    with open(log.path, "a") as fh:
        fh.write('{"step": 4, "lo')  # a run killed mid-write
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3]
    log.truncate_after(2)
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2]
