"""Candidates of a search space: the concrete spec of a parameter set, checked before
any training (it builds, it meets the budget) and keyed for de-duplication.

No torch here: building the graph and the cost model are pure IR work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from archc.diagnostics import Collector, DiagnosticError, error
from archc.frontend.locs import LocMap
from archc.frontend.schema import Spec
from archc.search.space import SearchSpace, parse_space

# Train settings that do not change a trial's result (how often it logs or saves).
_NO_EFFECT = ("log_interval", "checkpoint_interval", "device")


class Infeasible(Exception):
    """A candidate that must not be trained; the message says why."""


@dataclass(frozen=True)
class SpaceSource:
    """A search spec: its merged raw data (extends applied), locations and space."""

    name: str
    data: dict[str, Any]
    locs: LocMap
    space: SearchSpace


@dataclass(frozen=True)
class Candidate:
    """A feasible parameter set: its spec, graph hash, de-dup key and costs."""

    params: dict[str, Any]
    spec: Spec
    graph_hash: str
    key: str
    parameters: int
    flops_per_token: float


def load_space(source: str | FsPath, text: str | None = None) -> SpaceSource:
    """The search space of the spec at `source` (or of `text`); located errors."""
    from archc.frontend.resolve import load_raw

    data, locs = load_raw(source, text)
    if not isinstance(data, dict) or data.get("search") is None:
        raise error(
            f"{source} has no search section",
            locs.value(()),
            hint="add e.g. search: {d_model: {choice: [64, 128]}}",
        )
    diags = Collector()
    space = parse_space(data["search"], locs, diags)
    diags.raise_if_any()
    assert space is not None
    return SpaceSource(str(source), data, locs, space)


def freeze(
    src: SpaceSource, params: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> str:
    """Concrete spec text (YAML, no `search:`) for the choices in `params`, with the
    CLI-style `overrides` (e.g. the search's `train.steps=50`) applied after them."""
    from archc.frontend.format import to_yaml
    from archc.frontend.resolve import apply_override

    locs = LocMap(dict(src.locs.values), dict(src.locs.keys))
    data = src.space.apply(src.data, locs, params)
    for i, ov in enumerate(overrides):
        apply_override(data, locs, ov, i)
    lines = [f"# frozen from {src.name} with:"]
    lines += [f"#   {k} = {json.dumps(v)}" for k, v in sorted(params.items())]
    lines += [f"#   override {ov}" for ov in overrides]
    return "\n".join(lines) + "\n" + to_yaml(data)


def concrete_spec(
    src: SpaceSource, params: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> Spec:
    """The validated Spec of `params`, with CLI-style `overrides` applied after them."""
    from archc.frontend.resolve import load_spec

    name = f"{src.name}[frozen]"
    return load_spec(name, text=freeze(src, params, overrides))


def result_key(graph_hash: str, spec: Spec) -> str:
    """The de-dup key: the IR hash plus the train settings that change the result."""
    train = spec.train.model_dump(mode="json")
    for k in _NO_EFFECT:
        train.pop(k, None)
    blob = json.dumps({"graph": graph_hash, "train": train}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def build_candidate(
    src: SpaceSource, params: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> Candidate:
    """Check `params`: the spec validates, the graph builds, the budget holds.

    Raises Infeasible with the reason otherwise (nothing is trained either way).
    """
    from archc.api import to_graph
    from archc.ir.cost import model_cost
    from archc.ir.printer import structural_hash

    try:
        spec = concrete_spec(src, params, overrides)
        graph = to_graph(spec)
    except DiagnosticError as exc:
        raise Infeasible("; ".join(d.message for d in exc.diagnostics)) from None
    except (ValueError, KeyError, TypeError, ZeroDivisionError, AssertionError) as exc:
        raise Infeasible(f"the graph does not build: {type(exc).__name__}: {exc}") from None
    cons = src.space.constraints
    seq_len = int(cons.get("seq_len", spec.train.seq_len))
    cost = model_cost(graph, seq_len)
    n, f = cost.parameters, cost.forward_flops_per_token
    if "max_params" in cons and n > cons["max_params"]:
        raise Infeasible(f"{n} parameters > max_params {cons['max_params']:g}")
    if "min_params" in cons and n < cons["min_params"]:
        raise Infeasible(f"{n} parameters < min_params {cons['min_params']:g}")
    if "max_flops_per_token" in cons and f > cons["max_flops_per_token"]:
        raise Infeasible(
            f"{f:.4g} FLOPs per token > max_flops_per_token {cons['max_flops_per_token']:g}"
        )
    h = structural_hash(graph)
    return Candidate(dict(params), spec, h, result_key(h, spec), n, float(f))
