"""HHNAS: a hierarchical, adaptive mutation sampler for Optuna (after HHNAS-AM).

The space has a macro level (the template, parameter `tmpl`, coded by its index in
binary: one bit per structural choice) and a micro level (every other parameter,
grouped into gene groups by the first element of its path: `layers[2]`, `d_model`,
`define.mixer`, with the parameters of a oneof alternative in the group of the oneof).
Names follow archc.search.space's scoping (`tmpl=deep/layers[1].attention.heads`), but
any Optuna objective works: without templates there is no macro action.

One trial:
1. The first `n_startup_trials` (8) complete trials are drawn uniformly at random.
2. A parent is chosen by tournament: `tournament_size` (4) complete trials drawn at random,
   the best wins (multi-objective: the fewest trials dominating it, i.e. a Pareto-rank
   proxy; ties broken at random).
3. An action is chosen epsilon-greedily from the Q-table row of the current state:
   - `macro`: flip template bits, bit j with its own probability p_j (at least one);
     the new template's micro genes come from the best trial of that template, if any
     (else they are drawn at random); global genes are kept.
   - `redraw`: re-draw one gene group at random (a large micro step).
   - `step`: move one parameter to a neighbouring value (a small micro step: +-step
     for ints, a Gaussian of 10% of the (log) range for floats, the neighbouring
     choice for ordered numeric choices, another choice otherwise).
   - `crossover`: uniform crossover of gene groups with a second tournament winner of
     the same template.
   A child equal to an already-tried trial (complete, pruned or failed, on the active
   parameters) is mutated again, up to `max_retries` times (the second half of them
   with `redraw`).
4. State: the stagnation bucket, the number of complete trials since the best (or,
   multi-objective, the newest Pareto-optimal) trial: 0 (< 5), 1 (< 15), 2 (>= 15).
5. Reward, when the child completes (`after_trial`): single objective, the parent's
   value minus the child's (sign flipped when maximising) divided by the standard
   deviation of complete values, clipped to [-1, 1]; multi-objective, +1 when the
   child dominates its parent, -1 when dominated, else 0. A pruned or failed child
   (infeasible, too slow) gets -1.
   Q[s, a] += alpha * (r + gamma * max_a' Q[s', a'] - Q[s, a]); on a macro action,
   p_j of each flipped bit is multiplied by exp(bit_lr * r) (clipped to [0.05, 0.95]).

The policy (the Q-table, the bit probabilities, the update count) is not stored as one
value that workers overwrite: each finished child records its transition (state, action,
reward, next state, flipped bits) as trial system attrs (`hhnas:*`), and the policy is
the replay of every recorded transition in completion order. Several workers (or a
resumed study) therefore share and continue one policy, and no update is lost when two
workers finish at the same moment.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archc.search.space import TEMPLATE
from archc.search.workers import OVER_CAP

ACTIONS = ("macro", "redraw", "step", "crossover")
N_STATES = 3
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def scopes(name: str) -> list[tuple[str, str]]:
    """(controlling parameter, required value) pairs a scoped name depends on."""
    out = []
    parts = name.split("/")
    prefix = ""
    for seg in parts[:-1]:
        param, _, alt = seg.rpartition("=")
        out.append((prefix + param, alt))
        prefix += seg + "/"
    return out


def leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def gene_group(name: str) -> str:
    """The micro gene group of a parameter: the first two elements of its path (the
    path of its outermost oneof when it lives in an alternative; templates ignored)."""
    from archc.frontend.locs import path_str
    from archc.frontend.resolve import parse_path

    outer = [p for p, _ in scopes(name) if p != TEMPLATE]
    base = leaf(outer[0]) if outer else leaf(name)
    return path_str((parse_path(base) or (base,))[:2])


def active(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters whose scopes are all selected by `params`."""
    return {k: v for k, v in params.items() if all(params.get(p) == alt for p, alt in scopes(k))}


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in active(params).items()))


class HHNASSampler(BaseSampler):
    """Tournament selection + macro/micro mutation with a Q-learned strategy choice."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 8,
        tournament_size: int = 4,
        epsilon: float = 0.2,
        alpha: float = 0.3,
        gamma: float = 0.5,
        bit_lr: float = 0.3,
        max_retries: int = 20,
        macro_param: str = TEMPLATE,
        space: Any = None,
    ) -> None:
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self.n_startup_trials = n_startup_trials
        self.tournament_size = tournament_size
        self.epsilon = epsilon
        self.alpha = alpha
        self.gamma = gamma
        self.bit_lr = bit_lr
        self.max_retries = max_retries
        self.macro_param = macro_param
        self.space = space  # an archc SearchSpace: its distributions, all scopes at once

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    # -- the policy, stored in the study ----------------------------------------------------

    def _n_bits(self, n_templates: int) -> int:
        return max(1, math.ceil(math.log2(max(n_templates, 2))))

    def policy(self, study: Study, n_bits: int | None = None) -> dict[str, Any]:
        """The shared policy, {"q": [[...]*4]*3, "bit_p": [...]*n_bits, "updates": n}: the
        replay of every finished child's transition, in completion order."""
        if n_bits is None:
            macro = self.space.distributions().get(self.macro_param) if self.space else None
            n_bits = self._n_bits(len(macro.choices)) if macro is not None else 0
        q = [[0.0] * len(ACTIONS) for _ in range(N_STATES)]
        bit_p = [1.0 / n_bits] * n_bits if n_bits else []
        steps = [
            t
            for t in study.get_trials(deepcopy=False, states=_FINISHED)
            if "hhnas:reward" in t.system_attrs and t.datetime_complete is not None
        ]
        steps.sort(key=lambda t: (t.datetime_complete, t.number))
        for t in steps:
            attrs = t.system_attrs
            s, a = attrs["hhnas:state"], ACTIONS.index(attrs["hhnas:action"])
            reward, s_next = attrs["hhnas:reward"], attrs["hhnas:next_state"]
            q[s][a] += self.alpha * (reward + self.gamma * max(q[s_next]) - q[s][a])
            for j in attrs.get("hhnas:bits", []):
                if j < len(bit_p):  # else the template count changed: nothing to adapt
                    p = bit_p[j] * math.exp(self.bit_lr * reward)
                    bit_p[j] = float(np.clip(p, 0.05, 0.95))
        return {"q": q, "bit_p": bit_p, "updates": len(steps)}

    # -- optuna sampler API -----------------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.space is not None:
            return self.space.distributions()
        out: dict[str, BaseDistribution] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            for name, dist in t.distributions.items():
                out.setdefault(name, dist)
        return out

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or trial.params:
            return {}  # a re-queued trial keeps the parameters it was killed with
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup_trials:
            return {}
        done = sorted(done, key=lambda t: t.number)
        macro = search_space.get(self.macro_param)
        is_macro = isinstance(macro, CategoricalDistribution)
        pol = self.policy(study, self._n_bits(len(macro.choices)) if is_macro else 0)
        vals = [list(t.values) for t in done]
        scores = self._scores(study, vals)
        state = self._state(study, vals)
        allowed = [a for a in ACTIONS if a != "macro" or is_macro]
        if self._rng.rand() < self.epsilon:
            action = allowed[self._rng.randint(len(allowed))]
        else:
            row = pol["q"][state]
            best = max(row[ACTIONS.index(a)] for a in allowed)
            ties = [a for a in allowed if row[ACTIONS.index(a)] == best]
            action = ties[self._rng.randint(len(ties))]
        tried = {
            _key(t.params)
            for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.RUNNING
        }
        parent = self._tournament(done, scores)
        child: dict[str, Any] = dict(parent.params)
        flipped: list[int] = []
        for attempt in range(self.max_retries):
            # Half the retries with the chosen action, then large micro moves (the action
            # recorded, and rewarded, is the one that made the child).
            if attempt == self.max_retries // 2:
                action = "redraw"
            child, flipped = self._mutate(action, parent, done, scores, search_space, pol)
            if _key(child) not in tried:
                break
        system = study._storage
        for key, value in (
            ("hhnas:parent", parent._trial_id),
            ("hhnas:action", action),
            ("hhnas:state", state),
            ("hhnas:bits", flipped),
        ):
            system.set_trial_system_attr(trial._trial_id, key, value)
        return {k: v for k, v in child.items() if k in search_space and _fits(search_space[k], v)}

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Any,
    ) -> None:
        action = trial.system_attrs.get("hhnas:action")
        if action is None or trial.user_attrs.get(OVER_CAP):
            return  # not a child of ours, or never evaluated (the study's cap was reached)
        parent = study._storage.get_trial(trial.system_attrs["hhnas:parent"])
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        vals = [list(t.values) for t in sorted(done, key=lambda t: t.number)]
        if state == TrialState.COMPLETE and values is not None:
            reward = self._reward(study, parent.values, list(values), vals)
            vals.append(list(values))
        else:
            reward = -1.0
        system = study._storage
        system.set_trial_system_attr(trial._trial_id, "hhnas:reward", reward)
        system.set_trial_system_attr(trial._trial_id, "hhnas:next_state", self._state(study, vals))

    # -- selection ----------------------------------------------------------------------------

    def _scores(self, study: Study, vals: list[list[float]]) -> list[float]:
        """Lower is better: the signed value, or (multi-objective) the domination count."""
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        signed = [[s * v for s, v in zip(signs, row, strict=True)] for row in vals]
        if len(signs) == 1:
            return [v[0] for v in signed]
        return [float(sum(_dominates(o, v) for o in signed)) for v in signed]

    def _tournament(self, done: list[FrozenTrial], scores: list[float]) -> FrozenTrial:
        k = min(self.tournament_size, len(done))
        idx = self._rng.choice(len(done), size=k, replace=False)
        best = min(scores[i] for i in idx)
        winners = [i for i in idx if scores[i] == best]
        return done[winners[self._rng.randint(len(winners))]]

    def _state(self, study: Study, vals: list[list[float]]) -> int:
        """Stagnation bucket; `vals` are complete trials' values in trial order."""
        if not vals:
            return 0
        scores = self._scores(study, vals)
        if len(study.directions) == 1:
            best_pos = scores.index(min(scores))  # the first to reach the best value
        else:
            best_pos = max(i for i, s in enumerate(scores) if s == 0)  # newest on the front
        stagnation = len(vals) - 1 - best_pos
        return 0 if stagnation < 5 else 1 if stagnation < 15 else 2

    def _reward(
        self, study: Study, parent: list[float], child: list[float], vals: list[list[float]]
    ) -> float:
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        p = [s * v for s, v in zip(signs, parent, strict=True)]
        c = [s * v for s, v in zip(signs, child, strict=True)]
        if len(signs) > 1:
            return 1.0 if _dominates(c, p) else -1.0 if _dominates(p, c) else 0.0
        scale = float(np.std([v[0] for v in vals])) if len(vals) > 1 else 0.0
        diff = p[0] - c[0]
        if scale <= 0 or not math.isfinite(scale):
            return float(np.sign(diff))
        return float(np.clip(diff / scale, -1.0, 1.0))

    # -- mutation -----------------------------------------------------------------------------

    def _mutate(
        self,
        action: str,
        parent: FrozenTrial,
        done: list[FrozenTrial],
        scores: list[float],
        space: dict[str, BaseDistribution],
        pol: dict[str, Any],
    ) -> tuple[dict[str, Any], list[int]]:
        child = dict(parent.params)
        if action == "macro":
            return self._macro(child, done, scores, space, pol)
        genes = self._groups(child)
        if not genes:
            return child, []
        if action == "crossover":
            tmpl = child.get(self.macro_param)
            mates = [
                (t, s)
                for t, s in zip(done, scores, strict=True)
                if t.params.get(self.macro_param) == tmpl and t.number != parent.number
            ]
            if mates:
                mate = self._tournament([m[0] for m in mates], [m[1] for m in mates])
                for names in genes.values():
                    if self._rng.rand() < 0.5:
                        for n in names:
                            if n in mate.params:
                                child[n] = mate.params[n]
                        # The mate's alternative may need parameters the parent lacks.
                        for n, v in mate.params.items():
                            if gene_group(n) == gene_group(names[0]) and n != self.macro_param:
                                child.setdefault(n, v)
                return child, []
            action = "step"
        group = list(genes)[self._rng.randint(len(genes))]
        if action == "redraw":
            for n in genes[group]:
                if n in space:
                    child[n] = self._draw(space[n], child[n])
            # Parameters of alternatives the redraw selects are drawn fresh.
            for n in [n for n in child if gene_group(n) == group and n not in genes[group]]:
                del child[n]
            return child, []
        names = [n for n in genes[group] if n in space]
        if names:
            n = names[self._rng.randint(len(names))]
            child[n] = self._step(space[n], child[n])
        return child, []

    def _groups(self, params: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in sorted(active(params)):
            if n != self.macro_param:
                out.setdefault(gene_group(n), []).append(n)
        return out

    def _macro(
        self,
        child: dict[str, Any],
        done: list[FrozenTrial],
        scores: list[float],
        space: dict[str, BaseDistribution],
        pol: dict[str, Any],
    ) -> tuple[dict[str, Any], list[int]]:
        dist = space[self.macro_param]
        assert isinstance(dist, CategoricalDistribution)
        choices = list(dist.choices)
        nb = self._n_bits(len(choices))
        here = child.get(self.macro_param)
        cur = choices.index(here) if here in choices else 0
        new, flipped = cur, []
        for _ in range(50):
            flipped = [j for j in range(nb) if self._rng.rand() < pol["bit_p"][j]]
            if not flipped:
                p = np.asarray(pol["bit_p"]) / sum(pol["bit_p"])
                flipped = [int(self._rng.choice(nb, p=p))]
            new = cur
            for j in flipped:
                new ^= 1 << j
            if new < len(choices):
                break
        if new >= len(choices) or new == cur:
            if len(choices) < 2:
                return child, []
            new = int(self._rng.choice([i for i in range(len(choices)) if i != cur]))
            flipped = [j for j in range(nb) if (new ^ cur) >> j & 1]
        tmpl = choices[new]
        child[self.macro_param] = tmpl
        # Micro genes of the new template: from its best trial so far, else fresh draws.
        prefix = f"{self.macro_param}={tmpl}/"
        same = [
            (s, t)
            for t, s in zip(done, scores, strict=True)
            if t.params.get(self.macro_param) == tmpl
        ]
        for n in [n for n in child if n.startswith(prefix)]:
            del child[n]
        if same:
            best = min(same, key=lambda st: st[0])[1]
            child.update({n: v for n, v in best.params.items() if n.startswith(prefix)})
        return active(child), flipped  # the old template's genes are gone

    def _draw(self, dist: BaseDistribution, old: Any) -> Any:
        """A random value of `dist` different from `old` when there is one."""
        for _ in range(10):
            if isinstance(dist, CategoricalDistribution):
                value = dist.choices[self._rng.randint(len(dist.choices))]
            elif isinstance(dist, IntDistribution):
                n = (dist.high - dist.low) // dist.step
                value = dist.low + dist.step * self._rng.randint(n + 1)
                if dist.log:
                    lo, hi = math.log(dist.low), math.log(dist.high)
                    value = round(math.exp(self._rng.uniform(lo, hi)))
            else:
                assert isinstance(dist, FloatDistribution)
                lo, hi = dist.low, dist.high
                if dist.log:
                    lo, hi = math.log(lo), math.log(hi)
                value = float(self._rng.uniform(lo, hi))
                value = math.exp(value) if dist.log else value
            if value != old:
                return value
        return value

    def _step(self, dist: BaseDistribution, old: Any) -> Any:
        """A neighbouring value of `old` within `dist` (a small micro move)."""
        sign = 1 if self._rng.rand() < 0.5 else -1
        if isinstance(dist, IntDistribution):
            if dist.log:
                value = round(old * (2.0**sign))
            else:
                # A Gaussian move of ~15% of the range, at least one step.
                n = (dist.high - dist.low) // dist.step
                k = max(1, round(abs(self._rng.randn()) * 0.15 * n))
                value = old + sign * dist.step * k
            if not dist.low <= value <= dist.high:
                value = old - (value - old)
            return int(min(max(value, dist.low), dist.high))
        if isinstance(dist, FloatDistribution):
            if dist.log:
                span = math.log(dist.high) - math.log(dist.low)
                value = math.exp(math.log(old) + 0.15 * span * self._rng.randn())
            else:
                value = old + 0.15 * (dist.high - dist.low) * self._rng.randn()
            return float(min(max(value, dist.low), dist.high))
        choices = list(dist.choices)
        if len(choices) < 2:
            return old
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        if numeric:
            order = sorted(range(len(choices)), key=lambda i: choices[i])
            pos = order.index(choices.index(old)) + sign
            pos = pos if 0 <= pos < len(order) else pos - 2 * sign
            return choices[order[pos]]
        return self._draw(dist, old)


def _fits(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _dominates(a: list[float], b: list[float]) -> bool:
    """a dominates b (both to be minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def make_sampler(name: str, seed: int | None = None, **options: Any) -> BaseSampler:
    """An Optuna sampler by name: hhnas | tpe | random | nsga2."""
    from optuna.samplers import NSGAIISampler, TPESampler

    if name == "hhnas":
        return HHNASSampler(seed=seed, **options)
    if name == "tpe":
        return TPESampler(seed=seed, **options)
    if name == "random":
        return RandomSampler(seed=seed)
    if name == "nsga2":
        return NSGAIISampler(seed=seed, **options)
    raise ValueError(f"unknown sampler '{name}' (known: hhnas, tpe, random, nsga2)")
