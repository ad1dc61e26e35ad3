"""The `archc` command line: check, fmt, export-schema, compile, info, graph, train, eval,
generate, bench.

User mistakes print `file:line:col: error: ...` diagnostics and exit 2, never a
traceback (ARCHC_DEBUG=1 re-raises). torch is imported only by commands that build a
module (`compile` without --emit ir/dot), keeping `check` and `fmt` editor-fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from archc import knobs
from archc.diagnostics import DiagnosticError, error

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def _split_args(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional words -> (spec paths, overrides); an override contains '='."""
    specs = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return specs, overrides


def _one_spec(args: argparse.Namespace) -> tuple[str, list[str]]:
    specs, overrides = _split_args(args.args)
    if len(specs) != 1:
        raise error(f"expected one spec file, got {len(specs)}: {' '.join(specs) or '(none)'}")
    return specs[0], overrides


def _write(text: str, out: str | None) -> None:
    if out is None or out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)


# -- commands ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from archc.api import load, to_graph

    specs, overrides = _split_args(args.args)
    if not specs:
        raise error("archc check needs at least one spec file")
    problems: list[DiagnosticError] = []
    for path in specs:
        try:
            graph = to_graph(load(path, overrides))
        except DiagnosticError as exc:
            problems.append(exc)
            continue
        if not args.quiet:
            print(f"{path}: ok ({graph.name}, {len(graph)} nodes)")
    if problems:
        raise DiagnosticError([d for p in problems for d in p.diagnostics])
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    from archc.frontend.format import to_dsl, to_yaml
    from archc.frontend.resolve import parse_text
    from archc.frontend.schema import build_spec
    from archc.frontend.source import read_spec_file, spec_format

    text = read_spec_file(args.spec)
    data, locs = parse_text(text, args.spec)
    if isinstance(data, dict) and "extends" not in data and not _has_refs(data):
        build_spec(data, locs, source=args.spec)  # refuse to reformat an invalid spec
    target = args.to or spec_format(args.spec, text)
    out = to_dsl(data) if target == "dsl" else to_yaml(data)
    if args.in_place:
        Path(args.spec).write_text(out)
    else:
        _write(out, args.output)
    return EXIT_OK


def cmd_export_schema(args: argparse.Namespace) -> int:
    if args.reference:
        from archc.frontend.reference import render_reference

        _write(render_reference(), args.output)
    else:
        from archc.frontend.json_schema import render_schema

        _write(render_schema(), args.output)
    return EXIT_OK


def _has_refs(data: object) -> bool:
    if isinstance(data, dict):
        return any(_has_refs(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_refs(v) for v in data)
    return isinstance(data, str) and "${" in data


def _optimize(args: argparse.Namespace, graph: object, print_after_all: bool = False) -> object:
    """Run the pipeline the flags name (--passes STR, else -O LEVEL) on `graph`."""
    from archc.api import optimize
    from archc.ir.printer import print_graph

    def show(p: object, step: object) -> None:
        state = "changed" if step.changed else "unchanged"  # type: ignore[attr-defined]
        print(f"// ----- IR after {p.name} ({state}) -----")  # type: ignore[attr-defined]
        print(print_graph(step.graph), end="")  # type: ignore[attr-defined]

    return optimize(
        graph,  # type: ignore[arg-type]
        args.passes,
        2 if args.opt_level is None else args.opt_level,
        device=args.device,
        seq_len=args.seq_len,
        after_each=show if print_after_all else None,
    )


def cmd_compile(args: argparse.Namespace) -> int:
    from archc.api import load, to_graph
    from archc.ir.printer import structural_hash

    path, overrides = _one_spec(args)
    spec = load(path, overrides)
    graph = to_graph(spec)
    spec_hash = structural_hash(graph)  # the spec's graph, before any pass
    result = _optimize(args, graph, args.print_after_all)
    graph = result.graph  # type: ignore[attr-defined]
    if args.explain:
        from archc.passes.assign_kernels import explain, format_explain

        _write(format_explain(explain(graph, args.device or "cpu"), args.device or "cpu"), None)
    if args.emit == "ir":
        from archc.ir.printer import print_graph

        _write(print_graph(graph), args.output)
        return EXIT_OK
    if args.emit == "dot":
        from archc.ir.dot import to_dot

        _write(to_dot(graph), args.output)
        return EXIT_OK
    if args.emit == "torch":
        from archc.backends.torch.emit import emit_torch

        _write(emit_torch(graph, Path(path).name), args.output)
        if args.output and args.output != "-":
            print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    if args.explain or args.print_after_all:
        return EXIT_OK  # the report was the point; no module needed
    return _summary(spec, graph, spec_hash, result.log)  # type: ignore[attr-defined]


def _summary(
    spec: object, graph: object, spec_hash: str, log: list[tuple[str, bool]] | None = None
) -> int:
    """Build the nn.Module, run one forward on a dummy batch, print what was made."""
    import time

    import torch

    from archc.backends.torch.compiled import compile_graph
    from archc.ir.cost import model_cost

    t0 = time.perf_counter()
    model = compile_graph(graph)  # type: ignore[arg-type]
    built = time.perf_counter() - t0
    first = graph.node(graph.inputs[0])  # type: ignore[attr-defined]
    if first.attrs["kind"] == "tokens":
        x = torch.randint(0, spec.vocab, (2, 16))  # type: ignore[attr-defined]
    else:
        x = torch.randn(2, 16, first.attrs["dim"])
    with torch.no_grad():
        y = model(x)
    ops = Counter(n.op for n in graph.walk())  # type: ignore[attr-defined]
    cost = model_cost(graph)  # type: ignore[arg-type]
    print(f"model {graph.name}  (IR hash {spec_hash})")  # type: ignore[attr-defined]
    if log:
        changed = [name for name, c in log if c]
        print(
            f"  passes      {len(log)} run, {len(changed)} changed the graph"
            + (f": {', '.join(changed)}" if changed else "")
        )
    print(
        f"  nodes       {sum(ops.values())}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
    )
    print(f"  parameters  {model.num_parameters():,}")
    print(f"  fwd matmul FLOPs {cost.forward_flops_per_token:,.0f} per token at T={cost.seq_len}")
    print(
        f"  module      built in {built * 1e3:.0f} ms; forward {tuple(x.shape)} -> {tuple(y.shape)}"
    )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from archc.api import to_graph
    from archc.ir.cost import model_cost

    path, overrides = _one_spec(args)
    graph = to_graph(path, overrides)
    modes: list[tuple[str, str, str]] = []
    log: list[tuple[str, bool]] | None = None
    if args.device:
        # What a run at this length on that device gets: scan modes first, then kernels.
        from archc.passes.select_scan_mode import SelectScanMode

        chooser = SelectScanMode(args.seq_len, args.device)
        modes = chooser.report(graph)
        graph = chooser.run(graph).graph
    if args.passes is not None or args.opt_level is not None:
        # The cost of the optimized graph (default: the spec's graph as built, -O0).
        result = _optimize(args, graph)
        graph, log = result.graph, result.log  # type: ignore[attr-defined]
    cost = model_cost(graph, args.seq_len)
    kernels = _kernel_lines(graph, args.device) if args.device else None
    if args.json:
        extra: dict[str, object] = {}
        if args.device:
            extra = {
                "scan_modes": {p: {"mode": m, "reason": why} for p, m, why in modes},
                "kernels": _kernel_json(graph, args.device),
            }
        if log is not None:
            extra["passes"] = [{"pass": name, "changed": c} for name, c in log]
        print(json.dumps({"model": graph.name, **cost.as_dict(), **extra}, indent=2))
        return EXIT_OK
    rows = [
        ("model", graph.name),
        ("parameters", f"{cost.parameters:,}"),
        ("forward matmul FLOPs / token", f"{cost.forward_flops_per_token:,.0f} (T={cost.seq_len})"),
        ("backward matmul FLOPs / token", f"{cost.backward_flops_per_token:,.0f}"),
        ("elementwise FLOPs / token", f"{cost.elementwise_flops_per_token:,.0f}"),
        ("activation bytes / token", f"{cost.activation_bytes_per_token:,.0f}"),
        ("recurrent state bytes / sequence", f"{cost.state_bytes_per_sequence:,}"),
        ("KV-cache bytes / token", f"{cost.kv_cache_bytes_per_token:,}"),
        ("layers (mixers + MLPs)", str(cost.layers)),
        ("IR nodes", str(cost.nodes)),
    ]
    if log is not None:
        changed = [name for name, c in log if c]
        rows.append(("passes run (changed)", f"{len(log)} ({', '.join(changed) or 'none'})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if modes:
        print(f"scan modes on {args.device} at T={args.seq_len}:")
        w = [max(len(r[i]) for r in modes) for i in range(2)]
        for p, m, why in modes:
            print(f"  {p:<{w[0]}}  {m:<{w[1]}}  {why}")
    for line in kernels or ():
        print(line)
    return EXIT_OK


def _kernel_lines(graph: object, device: str) -> list[str]:
    """Which Triton kernel each scan node gets on `device`, and why not (no GPU needed)."""
    from archc.backends.triton.rules import format_assignments

    return format_assignments(graph, device)  # type: ignore[arg-type]


def _kernel_json(graph: object, device: str) -> dict[str, dict[str, str | None]]:
    from archc.backends.triton.rules import assign_kernels

    rows = assign_kernels(graph, device)  # type: ignore[arg-type]
    return {p: {"kernel": k, "reason": why} for p, (k, why) in rows.items()}


def cmd_graph(args: argparse.Namespace) -> int:
    from archc.api import to_graph
    from archc.ir.dot import to_dot

    path, overrides = _one_spec(args)
    dot = to_dot(to_graph(path, overrides))
    out = args.output
    if out.endswith(".svg"):
        exe = shutil.which("dot")
        if exe is None:
            raise error(
                "Graphviz 'dot' is not installed, so no SVG can be drawn",
                hint=f"write DOT text instead: archc graph {path} -o "
                f"{out[:-4]}.dot (or install graphviz)",
            )
        res = subprocess.run(
            [exe, "-Tsvg", "-o", out],
            input=dot,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if res.returncode != 0:
            raise error(f"Graphviz failed: {res.stderr.strip()}")
    else:
        _write(dot, out)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from archc.api import load
    from archc.runtime.rundir import SPEC, default_run_dir
    from archc.runtime.train import train

    specs, overrides = _split_args(args.args)
    if len(specs) > 1:
        raise error(f"expected one spec file, got {len(specs)}: {' '.join(specs)}")
    out = Path(args.out) if args.out else None
    if not specs:
        if not (args.resume and out is not None and (out / SPEC).is_file()):
            raise error(
                "archc train needs a spec file",
                hint="archc train SPEC [overrides], or --resume --out RUN to continue a run",
            )
        specs = [str(out / SPEC)]
    # The flags are shorthands for overrides of the spec's train: section, applied
    # first so that `--task parity train.task.n=5` keeps the explicit n.
    flags = []
    if args.task is not None:
        flags.append(f"train.task={json.dumps(args.task)}")
    if args.data is not None:
        flags.append(f"train.data={json.dumps(str(Path(args.data).resolve()))}")
    if args.steps is not None:
        flags.append(f"train.steps={args.steps}")
    overrides = [*flags, *overrides]
    spec = load(specs[0], overrides)
    run_dir = out or default_run_dir(spec.model)
    summary = train(spec, run_dir, resume=args.resume, show_progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # only rank 0 of a torchrun job reports
        print(summary.line())
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from archc.runtime.session import evaluate_run, open_run

    session = open_run(Path(args.run), args.device)
    metrics = evaluate_run(session, args.batches, Path(args.data) if args.data else None)
    if args.json:
        print(json.dumps({"run": args.run, "step": session.step, **metrics}, indent=2))
        return EXIT_OK
    text = f"{args.run} (step {session.step}): loss {metrics['loss']:.4f}"
    text += f", accuracy {metrics['accuracy']:.4f}"
    if "bpb" in metrics:
        text += f", {metrics['bpb']:.4f} bits/byte"
    print(text)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from archc.runtime.generate import generate
    from archc.runtime.session import open_run
    from archc.runtime.tasks import TaskError

    if args.tokens < 0:
        raise error(f"--tokens must be >= 0, got {args.tokens}")
    if args.top_k is not None and args.top_k < 1:
        raise error(f"--top-k must be >= 1, got {args.top_k}")
    session = open_run(Path(args.run), device=args.device)
    try:
        prompt = session.task.encode(args.prompt)
    except TaskError as exc:
        raise error(f"--prompt: {exc}", hint=exc.hint) from exc
    ids = generate(
        session.model,
        prompt,
        args.tokens,
        session.task.vocab,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    sep = "" if session.task.is_text else " "
    print(args.prompt + sep + session.task.decode(ids))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------


def _pass_flags(p: argparse.ArgumentParser, default_level: str) -> None:
    """--passes STR | -O LEVEL: the optimization pipeline (archc.passes.pipeline)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--passes",
        metavar="PIPELINE",
        help="passes to run, e.g. 'canonicalize,cse,fuse-pointwise{max_ops=16},dce'",
    )
    g.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        choices=[0, 1, 2],
        metavar="LEVEL",
        help=f"-O0: no optimization, -O2: the full pipeline (default: {default_level})",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archc", description="A declarative architecture compiler for sequence models."
    )
    p.add_argument("--version", action="version", version="archc 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    over = "overrides such as d_model=256 or layers[2].attention.heads=8"

    c = sub.add_parser(
        "check",
        help="validate specs (no torch import)",
        description="Parse, validate and build the IR of each spec.",
    )
    c.add_argument("args", nargs="+", metavar="SPEC|OVERRIDE", help="spec files, then " + over)
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing when all is well")
    c.set_defaults(func=cmd_check)

    f = sub.add_parser(
        "fmt",
        help="reformat or convert a spec (yaml <-> dsl)",
        description="Print a spec in canonical YAML or DSL form.",
    )
    f.add_argument("spec")
    f.add_argument("--to", choices=["yaml", "dsl"], help="target format (default: same)")
    f.add_argument("-o", "--output", help="write here instead of stdout")
    f.add_argument("-i", "--in-place", action="store_true", help="rewrite the file")
    f.set_defaults(func=cmd_fmt)

    x = sub.add_parser(
        "export-schema",
        help="print the JSON Schema of YAML specs (no torch import)",
        description="Print a JSON Schema (draft 2020-12) of YAML specs, for editors; "
        "--reference prints the spec-language reference (docs/reference.md) instead.",
    )
    x.add_argument("-o", "--output", help="write here instead of stdout")
    x.add_argument(
        "--reference", action="store_true", help="the Markdown reference, not the schema"
    )
    x.set_defaults(func=cmd_export_schema)

    k = sub.add_parser(
        "compile",
        help="compile a spec; print a summary or emit IR/torch/dot",
        description="Compile a spec. Without --emit: build the nn.Module, "
        "run a dummy forward and print a summary.",
    )
    k.add_argument("args", nargs="+", metavar="SPEC|OVERRIDE", help="a spec file, then " + over)
    k.add_argument("--emit", choices=["ir", "torch", "dot"], help="what to write")
    k.add_argument("-o", "--output", help="output path (default stdout)")
    _pass_flags(k, default_level="-O2")
    k.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    k.add_argument(
        "--explain",
        action="store_true",
        help="per node: the backend chosen (Triton kernel or torch) and why any fallback",
    )
    k.add_argument("--device", choices=["cpu", "cuda"], help="target device (default cpu)")
    k.add_argument("--seq-len", type=int, help="sequence length the passes optimize for")
    k.set_defaults(func=cmd_compile)

    i = sub.add_parser(
        "info",
        help="parameters, FLOPs, state and KV-cache sizes",
        description="Cost-model figures of a spec.",
    )
    i.add_argument("args", nargs="+", metavar="SPEC|OVERRIDE", help="a spec file, then " + over)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--seq-len", type=int, default=1024, help="sequence length for FLOPs")
    i.add_argument(
        "--device",
        help="also list which Triton kernel each scan gets on this device (e.g. cuda) and why not",
    )
    _pass_flags(i, default_level="the spec's graph as built (-O0)")
    i.set_defaults(func=cmd_info)

    g = sub.add_parser(
        "graph",
        help="draw the IR graph (.dot, or .svg with Graphviz)",
        description="Write the IR graph as DOT, or SVG through Graphviz.",
    )
    g.add_argument("args", nargs="+", metavar="SPEC|OVERRIDE", help="a spec file, then " + over)
    g.add_argument("-o", "--output", required=True, help="out.dot or out.svg")
    g.set_defaults(func=cmd_graph)

    t = sub.add_parser(
        "train",
        help="train a spec on a built-in task or a text file",
        description="Train a spec (its train: section, overridable here). "
        "Under torchrun, runs DistributedDataParallel.",
    )
    t.add_argument("args", nargs="*", metavar="SPEC|OVERRIDE", help="a spec file, then " + over)
    t.add_argument("--task", help="mqar, parity, dms, copy, selective-copy or text")
    t.add_argument("--data", metavar="FILE", help="text file (the text task)")
    t.add_argument("--steps", type=int, help="optimizer steps")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<model>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Loss, accuracy and (for text) bits per byte of a run's last checkpoint.",
    )
    e.add_argument("run", metavar="RUN_DIR")
    e.add_argument(
        "--data", metavar="FILE", help="score all of this text file (default: held-out split)"
    )
    e.add_argument("--batches", type=int, help="evaluation batches (default: all / 4x eval)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(func=cmd_eval)

    gn = sub.add_parser(
        "generate",
        help="sample from a trained run",
        description="Sample tokens after a prompt, carrying the model's state between tokens.",
    )
    gn.add_argument("run", metavar="RUN_DIR")
    gn.add_argument("--prompt", required=True, help="text (or space-separated ids for tasks)")
    gn.add_argument("--tokens", type=int, default=100, help="how many tokens to generate")
    gn.add_argument("--temperature", type=float, default=1.0, help="0 for greedy")
    gn.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    gn.add_argument("--seed", type=int, default=0)
    gn.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gn.set_defaults(func=cmd_generate)

    from archc.search.cli import add_parser as add_search_parser

    add_search_parser(sub)
    from archc.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    return p


def run(argv: Sequence[str] | None = None, handler: Callable[[str], None] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    emit = handler or (lambda text: print(text, file=sys.stderr))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at the first option: overrides written
    # after options (`archc train s.yaml --steps 5 train.lr=1e-3`) arrive here.
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (len(overrides) != len(extra) or not hasattr(args, "args")):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in overrides)}")
    if overrides:
        args.args = [*args.args, *overrides]
    try:
        return int(args.func(args))
    except DiagnosticError as exc:
        if knobs.debug():
            raise
        emit(exc.render())
        return EXIT_USER
    except KeyboardInterrupt:
        emit("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # an archc bug: say so briefly, keep the cause reachable
        if knobs.debug():
            raise
        emit(
            f"archc: internal error: {type(exc).__name__}: {exc}\n"
            "  (this is a bug in archc; rerun with ARCHC_DEBUG=1 for the traceback)"
        )
        return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
