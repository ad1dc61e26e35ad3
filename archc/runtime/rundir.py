"""The run directory: what a training run leaves behind.

RUN/spec.yaml        the resolved spec (extends, overrides and ${...} applied;
                     train.data made absolute), enough to rebuild the model
RUN/metrics.jsonl    one JSON row per logged step: step, loss, lr, tokens_per_s,
                     grad_norm, and eval_* fields when an evaluation ran
RUN/checkpoint.pt    the last good checkpoint (written atomically)
RUN/summary.json     the final summary of a finished run
"""

from __future__ import annotations

import copy
from pathlib import Path

from archc.diagnostics import error
from archc.frontend.format import to_yaml
from archc.frontend.schema import Spec
from archc.runtime.checkpoint import CHECKPOINT
from archc.runtime.prepare import data_path

SPEC = "spec.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def default_run_dir(model: str, root: Path = Path("runs")) -> Path:
    """runs/<model>, or runs/<model>-2, -3, ... when taken."""
    path = root / model
    n = 2
    while path.exists():
        path = root / f"{model}-{n}"
        n += 1
    return path


def resolved_spec_text(spec: Spec) -> str:
    """The spec as a run records it: resolved data, with an absolute data path."""
    raw = copy.deepcopy(spec.raw or {})
    data = data_path(spec)
    if data is not None:
        raw.setdefault("train", {})["data"] = str(data)
    return to_yaml(raw)


def find_run(path: Path) -> Path:
    """A run directory that holds a spec and a checkpoint (for eval and generate)."""
    if not path.is_dir():
        raise error(f"no run directory at {path}", hint="pass the --out of an 'archc train' run")
    for name in (SPEC, CHECKPOINT):
        if not (path / name).is_file():
            raise error(
                f"{path} is not a finished or checkpointed run: {name} is missing",
                hint="train first: archc train SPEC --out " + str(path),
            )
    return path
