"""`archc bench [SUITE] [--quick] [suite options]`: one benchmark suite, or `all` of them
into one report (archc/bench/all.py). Imports nothing heavy until a suite runs."""

from __future__ import annotations

import argparse
import importlib

from archc.bench import SUITES

COMMANDS = {**SUITES, "all": "archc.bench.all"}  # all: every suite, one report


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `bench` on the CLI's subparsers."""
    b = sub.add_parser(
        "bench",
        help="benchmarks: compiled vs hand-written, compile times",
        description="Side-by-side benchmarks reported as ratios.",
    )
    b.add_argument("suite", nargs="?", default="foundation", choices=list(COMMANDS), help="which")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="passed to the suite (e.g. all: --out DIR)"
    )
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(COMMANDS[args.suite])
    module.main((["--quick"] if args.quick else []) + list(args.bench_args))
    return 0
