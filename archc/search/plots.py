"""Study plots for `archc search`: optimisation history, Pareto front, parameter importances.

`write_plots(study, out_dir)` writes PNGs into `out_dir` and returns their paths:
- `history.png`: every COMPLETE trial's value against its number with the best-so-far line
  (one panel per objective in a multi-objective study); trials that reused another trial's
  result (user attr `dedup_of`) get their own marker.
- `pareto.png` (multi-objective only): the first two objectives of the COMPLETE trials, the
  Pareto-optimal trials highlighted, joined by a step line and labelled with their number;
  an axis named `params` or `flops` is logarithmic.
- `importances.png`: parameter importances (of the first objective when there are several),
  skipped when fewer than 2 trials completed or no parameter varies.

Objective names come from the study's user attr `objectives` when it holds one name per
objective, else `objective 0`, `objective 1`, ... matplotlib is imported lazily so the
module itself imports without it.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archc.diagnostics import error

LOG_AXES = ("params", "flops")  # objectives spanning orders of magnitude


def short_param_names(names: Iterable[str]) -> dict[str, str]:
    """Map each name to its last path element (after the final "/"), kept unique.

    Names whose short forms collide keep their full name.
    """
    names = list(dict.fromkeys(names))
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[name.rsplit("/", 1)[-1]].append(name)
    out: dict[str, str] = {}
    for short, full in groups.items():
        for name in full:
            out[name] = short if len(full) == 1 else name
    return out


def objective_names(study: optuna.Study) -> list[str]:
    """One label per objective: the study's user attr `objectives` if it fits, else numbered."""
    n = len(study.directions)
    given = study.user_attrs.get("objectives")
    if isinstance(given, (list, tuple)) and len(given) == n:
        return [str(g) for g in given]
    return [f"objective {i}" for i in range(n)]


def best_so_far(values: Sequence[float], direction: StudyDirection) -> list[float]:
    """The running best of `values` (minimum or maximum, per `direction`)."""
    pick = min if direction == StudyDirection.MINIMIZE else max
    out: list[float] = []
    for v in values:
        out.append(v if not out else pick(out[-1], v))
    return out


FRESH = {"s": 18, "color": "tab:blue", "label": "trial"}
REUSED = {"s": 30, "marker": "x", "color": "tab:gray", "label": "reused result (dedup)"}


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write the study's plots as PNGs into `out_dir`; the paths written, in order."""
    trials = sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    )
    if not trials:
        raise error("the study has no completed trials to plot")
    try:
        # Figures made directly (no pyplot): files only, no window, and the caller's
        # matplotlib backend and state are left alone.
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise error("plots need matplotlib", hint="pip install 'archc[plots]'") from None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = objective_names(study)
    written = [_save(_history(study, trials, names), out_dir / "history.png")]
    if len(study.directions) > 1:
        written.append(_save(_pareto(study, trials, names), out_dir / "pareto.png"))
    fig = _importances(study, trials, names)
    if fig is not None:
        written.append(_save(fig, out_dir / "importances.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    """Write `fig` to `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _history(study: optuna.Study, trials: list[FrozenTrial], names: list[str]) -> Any:
    """Value against trial number with the best-so-far line, one panel per objective."""
    from matplotlib.figure import Figure

    n = len(names)
    fig = Figure(figsize=(7, 3.2 * n + 0.8))
    axes = fig.subplots(n, 1, squeeze=False)
    numbers = [t.number for t in trials]
    reused = [t for t in trials if t.user_attrs.get("dedup_of") is not None]
    fresh = [t for t in trials if t.user_attrs.get("dedup_of") is None]
    panels = zip(axes[:, 0], names, study.directions, strict=True)
    for i, (ax, name, direction) in enumerate(panels):
        for group, style in ((fresh, FRESH), (reused, REUSED)):
            if group:
                ax.scatter([t.number for t in group], [t.values[i] for t in group], **style)
        best = best_so_far([t.values[i] for t in trials], direction)
        ax.step(numbers, best, where="post", color="tab:red", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
        ax.set_title(f"{name} ({direction.name.lower()})")
        if name in LOG_AXES and all(t.values[i] > 0 for t in trials):
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    fig.suptitle("optimisation history")
    return fig


def _pareto(study: optuna.Study, trials: list[FrozenTrial], names: list[str]) -> Any:
    """The first two objectives, the Pareto-optimal trials highlighted and joined."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    front = sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))
    on_front = {t.number for t in front}
    rest = [t for t in trials if t.number not in on_front]
    ax.scatter(
        [t.values[0] for t in rest],
        [t.values[1] for t in rest],
        s=18,
        color="tab:gray",
        alpha=0.6,
        label="trial",
    )
    xs, ys = [t.values[0] for t in front], [t.values[1] for t in front]
    # The staircase bounds the dominated region: it lies after each point along a
    # minimised x axis, before it along a maximised one.
    where = "post" if study.directions[0] == StudyDirection.MINIMIZE else "pre"
    ax.step(xs, ys, where=where, color="tab:red", alpha=0.7)
    ax.scatter(xs, ys, s=36, color="tab:red", zorder=3, label="Pareto-optimal")
    for t in front:
        ax.annotate(
            f"#{t.number}",
            (t.values[0], t.values[1]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize="small",
        )
    for axis, i in (("x", 0), ("y", 1)):
        if names[i] in LOG_AXES and all(t.values[i] > 0 for t in trials):
            getattr(ax, f"set_{axis}scale")("log")
    ax.set_xlabel(f"{names[0]} ({study.directions[0].name.lower()})")
    ax.set_ylabel(f"{names[1]} ({study.directions[1].name.lower()})")
    title = "Pareto front"
    if len(names) > 2:
        title += f" (optimal over all {len(names)} objectives)"
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def _importances(study: optuna.Study, trials: list[FrozenTrial], names: list[str]) -> Any | None:
    """Horizontal bars of parameter importances, or None when they cannot be estimated."""
    from matplotlib.figure import Figure

    if len(trials) < 2 or not _some_param_varies(trials):
        return None
    multi = len(names) > 1
    target = None
    if multi:
        # PED-ANOVA ranks low target values as good: negate a maximised objective.
        sign = 1.0 if study.directions[0] == StudyDirection.MINIMIZE else -1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    # PED-ANOVA needs no scikit-learn (fANOVA, optuna's default, does) and is deterministic.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*computes the importances of params")
        try:
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        except (ValueError, RuntimeError):
            return None  # e.g. no parameter common to all completed trials
    if not imp:
        return None
    short = short_param_names(imp)
    labels = [short[k] for k in imp][::-1]  # most important on top
    values = list(imp.values())[::-1]
    fig = Figure(figsize=(7, 1.2 + 0.4 * len(labels)))
    ax = fig.subplots()
    ax.barh(labels, values, color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA)")
    title = "parameter importances"
    if multi:
        title += f" for {names[0]} (first objective only)"
    ax.set_title(title)
    return fig


def _some_param_varies(trials: list[FrozenTrial]) -> bool:
    """Whether some parameter takes more than one value across `trials`."""
    seen: dict[str, set[str]] = defaultdict(set)
    for t in trials:
        for k, v in t.params.items():
            seen[k].add(repr(v))
    return any(len(vals) > 1 for vals in seen.values())
