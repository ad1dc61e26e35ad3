"""`archc bench all`: every benchmark suite, one Markdown report with plots.

Run: ``archc bench all [--quick] [--out DIR] [--only a,b]``. Each suite of
archc.bench.SUITES runs in this process, one after another (so no two compete for the
cores), its printed report captured and echoed; DIR/report.md gets the machine and the
versions, a summary table (suite, status, seconds) and every suite's output verbatim,
and DIR/ the plots the suites draw (the search regret curves). A suite that fails is
reported as failed with its error, and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from archc.bench import SUITES
from archc.bench.report import text_table

REPO = Path(__file__).resolve().parents[2]
# Extra arguments per suite: where its plots go ({out} is the report's folder).
PLOT_ARGS = {"search": ["--plot", "{out}/search-regret.png"]}


class _Tee(io.TextIOBase):
    """Writes to the console and keeps a copy."""

    def __init__(self, console: io.TextIOBase) -> None:
        self.console, self.copy = console, io.StringIO()

    def write(self, s: str) -> int:
        self.console.write(s)
        self.console.flush()
        return self.copy.write(s)


def machine_info() -> list[tuple[str, str]]:
    """(what, value) rows: machine, Python, library versions, the commit."""
    import optuna
    import torch

    rows = [
        ("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("machine", f"{platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}"),
        ("memory", _memory()),
        ("GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else "none"),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} ({torch.get_num_threads()} threads)"),
        ("optuna", optuna.__version__),
    ]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except ImportError:
        rows.append(("triton", "not installed"))
    rows.append(("archc commit", _commit()))
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def run_suite(name: str, argv: list[str]) -> tuple[str, float, str]:
    """(status, seconds, captured output) of one suite's main(argv)."""
    module = importlib.import_module(SUITES[name])
    tee = _Tee(sys.stdout)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    status = "ok"
    with contextlib.redirect_stdout(tee):
        try:
            module.main(argv)
        except SystemExit as exc:  # a suite's own "cannot run here" (e.g. no data file)
            if exc.code not in (0, None):
                status = f"skipped: {exc.code}"
        except Exception:
            status = "failed"
            print(traceback.format_exc())
    return status, time.perf_counter() - t0, tee.copy.getvalue()


def render(
    info: list[tuple[str, str]],
    results: list[tuple[str, str, float, str]],
    command: str,
    plots: list[Path],
) -> str:
    """The report's Markdown."""
    lines = ["# archc benchmark report", "", f"Command: `{command}`", ""]
    lines += ["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in info], ""]
    lines += ["| suite | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {n} | {s} | {t:.0f} |" for n, s, t, _ in results]
    for plot in plots:
        lines += ["", f"![{plot.stem}]({plot.name})"]
    for name, status, seconds, output in results:
        lines += ["", f"## {name} ({status}, {seconds:.0f} s)", "", "```", output.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="each suite's quick form")
    ap.add_argument("--out", type=Path, help="report folder (default runs/bench-<date>)")
    ap.add_argument("--only", help="comma-separated suites (default: all)")
    args = ap.parse_args(argv)
    names = list(SUITES) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    out = args.out or Path("runs") / f"bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    command = "archc bench all" + (" --quick" if args.quick else "")
    command += f" --out {out}" + (f" --only {args.only}" if args.only else "")
    results = []
    for name in names:
        suite_argv = (["--quick"] if args.quick else []) + [
            a.format(out=out) for a in PLOT_ARGS.get(name, [])
        ]
        print(f"\n== {name} ==", flush=True)
        status, seconds, output = run_suite(name, suite_argv)
        results.append((name, status, seconds, output))
    plots = sorted(out.glob("*.png"))
    report = out / "report.md"
    report.write_text(render(machine_info(), results, command, plots))
    print()
    rows = [[n, s, f"{t:.0f}"] for n, s, t, _ in results]
    print(text_table([["suite", "status", "seconds"], *rows]))
    print(f"report: {report}")


if __name__ == "__main__":
    main()
