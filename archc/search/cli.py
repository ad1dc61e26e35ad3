"""`archc search`: run a study over a spec's space, list its best trials, freeze one.

    archc search SPEC [overrides] [--trials N] [--max-trials M] [--workers K]
                 [--sampler hhnas|tpe|random|nsga2]
                 [--objective loss|accuracy|params|flops|latency[,...]] [--dir DIR]
                 [--storage URL --study NAME] [--seed S] [--heartbeat S]
    archc search best STUDY [--top K]
    archc search freeze STUDY --trial N [-o spec.yaml]
    archc search plot STUDY [-o DIR]

A study lives in DIR/study.db (SQLite; default DIR runs/search-<spec name>), or in any
Optuna storage URL (`--storage postgresql://...`) with `--study NAME`; STUDY is such a
directory, or the study name with `--storage`. Running again continues the study.

Many workers: start `archc search SPEC --max-trials M` several times (in terminals, or
on several machines with one --storage URL), or once with `--workers K`. `--trials N`
is what this worker evaluates; `--max-trials M` caps the whole study, whichever worker
runs them. Workers record heartbeats; a worker killed mid-trial has its trial failed
and re-queued by the others after about 3 heartbeats, and the study goes on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from archc.diagnostics import error

SAMPLERS = ("hhnas", "tpe", "random", "nsga2")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `search` on the CLI's subparsers."""
    s = sub.add_parser(
        "search",
        help="architecture search over a spec's search space (Optuna; HHNAS sampler)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("target", help="a spec with a search section, or best / freeze / plot")
    s.add_argument("args", nargs="*", help="overrides (a.b=v), or the STUDY of best/freeze")
    s.add_argument(
        "--trials", type=int, help="trials this worker evaluates (default 20, or up to the cap)"
    )
    s.add_argument("--max-trials", type=int, help="evaluated trials in the whole study")
    s.add_argument("--workers", type=int, default=1, help="local worker processes to start")
    s.add_argument("--heartbeat", type=int, default=10, help="seconds between heartbeats")
    s.add_argument("--quiet", action="store_true", help="no summary at the end")
    s.add_argument("--sampler", choices=SAMPLERS, default="hhnas")
    s.add_argument("--objective", default="loss", help="comma-separated: loss,params,...")
    s.add_argument("--dir", help="study directory (default runs/search-<spec name>)")
    s.add_argument("--storage", help="an Optuna storage URL instead of DIR/study.db")
    s.add_argument("--study", help="the study's name in --storage")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trial", type=int, help="freeze: the trial number")
    s.add_argument(
        "-o", "--output", help="freeze: write the spec here (default stdout); plot: the folder"
    )
    s.add_argument("--top", type=int, default=10, help="best: how many trials")
    s.set_defaults(func=cmd_search)


def _storage(url: str | None, directory: Path | None) -> str:
    """`url`, or the SQLite file of a study directory."""
    if url:
        return url
    assert directory is not None
    return f"sqlite:///{directory.resolve() / 'study.db'}"


def _study_names(storage: str) -> list[str]:
    """The studies in `storage`; an unreachable server, bad URL or missing driver is a
    user error (exit 2), not a traceback."""
    import optuna

    try:
        return [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as exc:
        raise error(f"cannot open the study storage {storage!r}: {exc}") from None


def _open(storage: str, name: str | None) -> object:
    """The storage's study `name` (or its only study)."""
    import optuna

    names = _study_names(storage)
    if name is None:
        if len(names) != 1:
            raise error(f"the storage holds {len(names)} studies; name one with --study")
        name = names[0]
    if name not in names:
        raise error(f"no study named {name!r} in {storage!r} (it has: {', '.join(names)})")
    return optuna.load_study(study_name=name, storage=storage)


def _study_place(args: argparse.Namespace) -> tuple[str, str | None]:
    if not args.args:
        raise error(
            f"archc search {args.target} needs the STUDY (a directory or, with "
            "--storage, a study name)"
        )
    where = args.args[0]
    if args.storage:
        return args.storage, args.study or where
    directory = Path(where)
    if not (directory / "study.db").is_file():
        raise error(f"{where}: no study here (expected {directory / 'study.db'})")
    return _storage(None, directory), args.study


def cmd_search(args: argparse.Namespace) -> int:
    if args.target == "best":
        return _best(args)
    if args.target == "freeze":
        return _freeze(args)
    if args.target == "plot":
        return _plot(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import optuna

    from archc.search.study import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # archc prints its own summary

    spec = Path(args.target)
    if not spec.is_file():
        raise error(f"{args.target}: no such spec file (or use best / freeze / plot)")
    for flag, value in (
        ("--trials", args.trials),
        ("--max-trials", args.max_trials),
        ("--workers", args.workers),
        ("--heartbeat", args.heartbeat),
    ):
        if value is not None and value <= 0:
            raise error(f"{flag} must be positive, got {value}")
    trials = args.trials if args.trials is not None or args.max_trials else 20
    directory = None if args.storage else Path(args.dir or f"runs/search-{spec.stem}")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    storage = _storage(args.storage, directory)
    if args.storage:
        _study_names(storage)  # fail early and clearly on an unreachable storage
    options = dict(
        objective=args.objective,
        sampler=args.sampler,
        storage=storage,
        study_name=args.study or spec.stem,
        overrides=list(args.args),
        run_root=None if directory is None else directory / "runs",
        max_trials=args.max_trials,
        heartbeat_s=args.heartbeat,
    )
    if args.workers > 1:
        # The study (and its tables) exist before the workers start, so they only load it.
        study = run_study(spec, n_trials=0, seed=args.seed, **options)  # type: ignore[arg-type]
        code = run_workers(args, directory, trials)
        if code:
            return code
    else:
        study = run_study(spec, n_trials=trials, seed=args.seed, **options)  # type: ignore[arg-type]
    if args.quiet:
        return 0
    _print_best(study, args.top)
    where = directory if directory is not None else f"{storage} (study {study.study_name})"
    print(f"study: {where}; `archc search best {directory or study.study_name}` lists it")
    return 0


def run_workers(args: argparse.Namespace, directory: Path | None, trials: int | None) -> int:
    """Start `args.workers` single-worker copies of this search (seeds seed, seed+1, ...)
    and wait for them; the first non-zero exit status, else 0."""
    import subprocess
    import sys

    argv = ["search", args.target, *args.args, "--objective", args.objective]
    argv += ["--sampler", args.sampler, "--heartbeat", str(args.heartbeat), "--quiet"]
    argv += ["--storage", args.storage] if args.storage else ["--dir", str(directory)]
    for flag, value in (("--study", args.study), ("--max-trials", args.max_trials)):
        if value is not None:
            argv += [flag, str(value)]
    if trials is not None:
        argv += ["--trials", str(trials)]
    cmd = [sys.executable, "-m", "archc", *argv]
    procs = [subprocess.Popen([*cmd, "--seed", str(args.seed + i)]) for i in range(args.workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    return next((c for c in codes if c), 0)


def _print_best(study: object, top: int) -> None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))  # type: ignore[attr-defined]
    if not done:
        print("no completed trials")
        return
    multi = len(study.directions) > 1  # type: ignore[attr-defined]
    if multi:
        rows = sorted(study.best_trials, key=lambda t: t.values)  # type: ignore[attr-defined]
        print(f"Pareto front ({len(rows)} of {len(done)} completed trials):")
    else:
        sign = 1 if study.direction.name == "MINIMIZE" else -1  # type: ignore[attr-defined]
        rows = sorted(done, key=lambda t: sign * t.value)[:top]
        print(f"best {len(rows)} of {len(done)} completed trials:")
    for t in rows:
        values = ", ".join(f"{v:.6g}" for v in t.values)
        attrs = t.user_attrs
        params = " ".join(f"{k.rsplit('/', 1)[-1]}={v}" for k, v in sorted(t.params.items()))
        extra = f" (same graph as #{attrs['dedup_of']})" if "dedup_of" in attrs else ""
        print(
            f"  #{t.number:<4} [{values}]  params {attrs.get('params', '?'):,}  "
            f"hash {attrs.get('graph_hash', '?')}{extra}\n        {params}"
        )


def _best(args: argparse.Namespace) -> int:
    storage, name = _study_place(args)
    _print_best(_open(storage, name), args.top)
    return 0


def _freeze(args: argparse.Namespace) -> int:
    from archc.search.study import freeze_trial

    storage, name = _study_place(args)
    study = _open(storage, name)
    if args.trial is None:
        raise error("archc search freeze needs --trial N (see `archc search best`)")
    numbers = {t.number for t in study.trials}  # type: ignore[attr-defined]
    if args.trial not in numbers:
        raise error(f"the study has no trial {args.trial}")
    text = freeze_trial(study, args.trial)  # type: ignore[arg-type]
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from archc.search.plots import write_plots

    storage, name = _study_place(args)
    study = _open(storage, name)
    where = args.output or (
        Path(args.args[0]) / "plots" if not args.storage else Path(f"plots-{study.study_name}")  # type: ignore[attr-defined]
    )
    for path in write_plots(study, Path(where)):  # type: ignore[arg-type]
        print(f"wrote {path}")
    return 0
