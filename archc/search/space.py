"""Search spaces written in a spec's `search:` section, and their resolution per trial.

A spec with a `search:` section is still a complete, concrete spec (its own values are
the defaults `archc check`/`compile` use); the section says which values a search may
change. Syntax (YAML):

```yaml
search:
  d_model: {choice: [32, 64]}                 # a domain at an override path
  train.lr: {float: [1e-4, 3e-3], log: true}  # float range (log scale)
  layers[2].repeat.n: {int: [1, 4]}           # int range (+ step: k, log: true)
  define.mixer: {oneof: {attn: [{attention: {heads: {choice: [2, 4]}}}],
                         rec: [lstm]}}        # alternative sub-specs (conditional)
  templates:                                  # macro level: alternative structures
    flat: {layers: [embed, mixer, head]}      # each: override paths -> values
    deep: {layers: [embed, mixer, mixer, head], define.mixer2: ...}
  constraints: {max_params: 200000, max_flops_per_token: 5e6}
```

- Keys are override paths (`layers[2].attention.heads` or `layers.2.attention.heads`),
  applied with the resolver's override machinery (so `{norm: rms}` shorthands expand
  as for `archc train spec.yaml layers[1].norm.kind=layer`).
- A value may hold domains anywhere inside it: `{choice: [...]}` (scalars),
  `{int: [lo, hi]}` (+ `step`, `log`), `{float: [lo, hi]}` (+ `step`, `log`), and
  `{oneof: {name: value, ...}}` (or a list; items are named by their component). The
  parameters inside an alternative exist only when it is chosen.
- `templates` are named alternative macro structures, each a block of assignments
  (with its own micro domains), applied before the global ones. The template is the
  categorical parameter `tmpl`; its code is the template's index in binary (the macro
  bits HHNAS flips), so list templates such that bit `j` means one structural choice.

Parameter names are path-qualified and scoped by the choices they depend on, so one
name keeps one domain for a whole study (Optuna requires that):
`d_model`, `tmpl`, `tmpl=deep/layers[1].attention.heads`,
`define.mixer`, `define.mixer=attn/define.mixer[0].attention.heads`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from archc.diagnostics import Collector, DiagnosticError, SourceLoc, did_you_mean, error
from archc.frontend.locs import LocMap, Path, path_str

TEMPLATE = "tmpl"
KINDS = ("choice", "int", "float", "oneof")
_MODIFIERS = {"choice": (), "oneof": (), "int": ("step", "log"), "float": ("step", "log")}
_ALT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
CONSTRAINT_KEYS = ("max_params", "min_params", "max_flops_per_token", "seq_len")


@dataclass(frozen=True)
class Domain:
    """One searched parameter: `kind` is choice | int | float | oneof | template."""

    name: str
    kind: str
    choices: tuple[Any, ...] = ()  # choice values; alternative / template names
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    loc: SourceLoc | None = None

    def distribution(self) -> Any:
        """The matching optuna distribution (optuna imported lazily)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "int":
            step = int(self.step or 1)
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return CategoricalDistribution(list(self.choices))

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter through an optuna trial."""
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind in ("int", "float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return ok and self.low <= value <= self.high
        return value in self.choices


@dataclass(frozen=True)
class Hole:
    """Where a domain sits inside a value; `alts` are a oneof's value templates."""

    domain: Domain
    src: Path  # path of the domain mapping in the raw spec data (for locations)
    alts: dict[str, tuple[Any, Path]] = field(default_factory=dict)


@dataclass(frozen=True)
class Assign:
    """`path: value` of a search block; `value` may contain Holes."""

    path: Path
    value: Any
    src: Path
    loc: SourceLoc | None


@dataclass
class SearchSpace:
    """The parsed `search:` section of a spec (see the module docstring)."""

    assigns: tuple[Assign, ...]
    templates: dict[str, tuple[Assign, ...]]
    constraints: dict[str, float]
    locs: LocMap
    loc: SourceLoc | None = None
    constraints_loc: SourceLoc | None = None
    domains: dict[str, Domain] = field(default_factory=dict)

    def distributions(self) -> dict[str, Any]:
        """name -> optuna distribution, for every parameter of every scope."""
        return {n: d.distribution() for n, d in self.domains.items()}

    @property
    def template_names(self) -> list[str]:
        return list(self.templates)

    def resolve(self, get: Callable[[Domain], Any]) -> list[tuple[Path, Any, LocMap, Any]]:
        """The concrete assignments, drawing each active domain with `get(domain)`."""
        out = []
        blocks: list[tuple[Assign, ...]] = []
        if self.templates:
            name = get(self.domains[TEMPLATE])
            blocks.append(self.templates[name])
        blocks.append(self.assigns)
        for block in blocks:
            for a in block:
                vlocs = LocMap()
                value = _fill(a.value, a.src, (), get, self.locs, vlocs)
                out.append((a.path, value, vlocs, a.loc))
        return out

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest every active parameter on an optuna trial; name -> value."""
        params: dict[str, Any] = {}

        def get(d: Domain) -> Any:
            params[d.name] = d.suggest(trial)
            return params[d.name]

        self.resolve(get)
        return params

    def random_params(self, rng: Any) -> dict[str, Any]:
        """Active parameters drawn uniformly with a numpy RandomState (tests, startup)."""
        params: dict[str, Any] = {}

        def get(d: Domain) -> Any:
            if d.kind in ("int", "float"):
                lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
                x = rng.uniform(lo, hi)
                x = math.exp(x) if d.log else x
                if d.kind == "int":
                    step = int(d.step or 1)
                    x = int(d.low) + step * round((x - d.low) / step)
                    x = min(max(x, int(d.low)), int(d.high))
                params[d.name] = x
            else:
                params[d.name] = d.choices[rng.randint(len(d.choices))]
            return params[d.name]

        self.resolve(get)
        return params

    def apply(self, data: dict[str, Any], locs: LocMap, params: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of `data` (no `search`) with the choices in `params` set."""
        from archc.frontend.resolve import assign_path

        def get(d: Domain) -> Any:
            if d.name not in params:
                raise error(f"no value for search parameter '{d.name}'", d.loc)
            if not d.contains(params[d.name]):
                raise error(f"value {params[d.name]!r} is outside the domain of '{d.name}'", d.loc)
            return params[d.name]

        out = copy.deepcopy({k: v for k, v in data.items() if k != "search"})
        for path, value, vlocs, loc in self.resolve(get):
            assign_path(out, locs, path, value, vlocs, loc)
        return out


def _fill(
    node: Any, src: Path, dst: Path, get: Callable[[Domain], Any], locs: LocMap, out: LocMap
) -> Any:
    """Copy a value template, replacing Holes by drawn values, recording locations."""
    if isinstance(node, Hole):
        value = get(node.domain)
        if node.domain.kind == "oneof":
            alt, alt_src = node.alts[value]
            return _fill(alt, alt_src, dst, get, locs, out)
        out.set(dst, locs.value(node.src))
        return value
    out.set(dst, locs.value(src), locs.keys.get(src))
    if isinstance(node, dict):
        return {k: _fill(v, (*src, k), (*dst, k), get, locs, out) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, (*src, i), (*dst, i), get, locs, out) for i, v in enumerate(node)]
    return node


def is_domain(value: Any) -> bool:
    """A mapping with exactly one domain key (`choice`, `int`, `float`, `oneof`)."""
    return isinstance(value, dict) and sum(k in KINDS for k in value) == 1


class _Parser:
    def __init__(self, locs: LocMap, diags: Collector) -> None:
        self.locs = locs
        self.diags = diags
        self.domains: dict[str, Domain] = {}

    def add(self, dom: Domain) -> Domain:
        if dom.name in self.domains:
            self.diags.error(f"search parameter '{dom.name}' is defined twice", dom.loc)
        self.domains[dom.name] = dom
        return dom

    def block(self, raw: Any, src: Path, scope: str, skip: tuple[str, ...]) -> tuple[Assign, ...]:
        from archc.frontend.resolve import parse_path

        if not isinstance(raw, dict):
            msg = "a search block must map override paths to values"
            self.diags.error(msg, self.locs.value(src))
            return ()
        out = []
        for key, value in raw.items():
            if key in skip:
                continue
            kloc = self.locs.key((*src, key))
            path = parse_path(key)
            if path is None:
                self.diags.error(
                    f"'{key}' is not an override path", kloc, hint="e.g. layers[2].attention.heads"
                )
                continue
            if path[0] == "search":
                self.diags.error("a search section cannot search itself", kloc)
                continue
            tmpl = self.value(value, (*src, key), path, scope)
            out.append(Assign(path, tmpl, (*src, key), kloc))
        return tuple(out)

    def value(self, raw: Any, src: Path, dst: Path, scope: str) -> Any:
        if is_domain(raw):
            return self.domain(raw, src, dst, scope)
        if isinstance(raw, dict):
            return {k: self.value(v, (*src, k), (*dst, k), scope) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v, (*src, i), (*dst, i), scope) for i, v in enumerate(raw)]
        return raw

    def domain(self, raw: dict[str, Any], src: Path, dst: Path, scope: str) -> Any:
        (kind,) = [k for k in raw if k in KINDS]
        loc = self.locs.key((*src, kind))
        name = scope + path_str(dst)
        for key in raw:
            if key != kind and key not in _MODIFIERS[kind]:
                allowed = _MODIFIERS[kind]
                self.diags.error(
                    f"unknown key '{key}' in a '{kind}' domain",
                    self.locs.key((*src, key)),
                    hint=did_you_mean(key, list(allowed))
                    or (f"known keys: {', '.join(allowed)}" if allowed else None),
                )
        arg = raw[kind]
        aloc = self.locs.value((*src, kind))
        if kind == "choice":
            ok = isinstance(arg, list) and arg and all(_scalar(x) for x in arg)
            if not ok:
                self.diags.error(
                    "choice needs a non-empty list of scalars",
                    aloc,
                    hint="use {oneof: {...}} to choose between structures",
                )
                return None
            if len(set(map(repr, arg))) != len(arg):
                self.diags.error("choice lists a value twice", aloc)
            return Hole(self.add(Domain(name, "choice", tuple(arg), loc=loc)), src)
        if kind == "oneof":
            return self.oneof(arg, (*src, kind), dst, scope, name, loc)
        return self.range(kind, raw, arg, src, name, loc)

    def range(self, kind: str, raw: dict, arg: Any, src: Path, name: str, loc: Any) -> Any:
        aloc = self.locs.value((*src, kind))
        num = int if kind == "int" else (int, float)
        if not (
            isinstance(arg, list)
            and len(arg) == 2
            and all(isinstance(x, num) and not isinstance(x, bool) for x in arg)
        ):
            self.diags.error(f"{kind} needs [low, high] ({kind} numbers)", aloc)
            return None
        lo, hi = arg
        log = raw.get("log", False)
        step = raw.get("step")
        bad = None
        if lo > hi:
            bad = f"{kind} range [{lo}, {hi}] is empty (low > high)"
        elif not isinstance(log, bool):
            bad = "log must be true or false"
        elif log and lo <= 0:
            bad = f"a log-scale range needs low > 0 (got {lo})"
        elif step is not None and (
            not isinstance(step, num) or isinstance(step, bool) or step <= 0
        ):
            bad = f"step must be a positive {kind} number (got {step!r})"
        elif step is not None and log:
            bad = "step and log cannot be combined"
        if bad:
            self.diags.error(bad, aloc)
            return None
        dom = Domain(name, kind, (), float(lo), float(hi), step, log, loc)
        if kind == "int":
            dom = Domain(name, kind, (), int(lo), int(hi), step, log, loc)
        return Hole(self.add(dom), src)

    def oneof(self, arg: Any, src: Path, dst: Path, scope: str, name: str, loc: Any) -> Any:
        if isinstance(arg, list):
            names = [_item_name(x, i) for i, x in enumerate(arg)]
            names = [n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names)]
            items = list(zip(names, [(*src, i) for i in range(len(arg))], arg, strict=True))
        elif isinstance(arg, dict):
            items = [(str(k), (*src, k), v) for k, v in arg.items()]
        else:
            items = []
        if not items:
            self.diags.error("oneof needs a non-empty list or mapping of alternatives", loc)
            return None
        alts: dict[str, tuple[Any, Path]] = {}
        for alt, asrc, raw in items:
            if not _ALT_NAME.match(alt):
                self.diags.error(
                    f"alternative name '{alt}' may hold only letters, digits, '_', '.', '-'",
                    self.locs.key(asrc),
                )
                continue
            alts[alt] = (self.value(raw, asrc, dst, f"{name}={alt}/"), asrc)
        return Hole(self.add(Domain(name, "oneof", tuple(alts), loc=loc)), src, alts)


def _scalar(x: Any) -> bool:
    return x is None or isinstance(x, (bool, int, float, str))


def _item_name(item: Any, index: int) -> str:
    """A oneof list item's name: the component it names, else its index."""
    if isinstance(item, str) and _ALT_NAME.match(item):
        return item
    if isinstance(item, dict) and len(item) == 1 and _ALT_NAME.match(str(next(iter(item)))):
        return str(next(iter(item)))
    if isinstance(item, list) and len(item) == 1:
        return _item_name(item[0], index)
    return str(index)


def parse_space(
    raw: Any, locs: LocMap, diags: Collector, src: Path = ("search",)
) -> SearchSpace | None:
    """Parse a `search:` section (errors go to `diags`); None when it is unusable."""
    loc = locs.key(src)
    if not isinstance(raw, dict):
        diags.error("'search' must be a mapping of override paths to domains", locs.value(src))
        return None
    p = _Parser(locs, diags)
    templates: dict[str, tuple[Assign, ...]] = {}
    traw = raw.get("templates")
    if traw is not None:
        tsrc = (*src, "templates")
        if not isinstance(traw, dict) or not traw:
            diags.error("'templates' must map template names to blocks", locs.value(tsrc))
        else:
            for tname, block in traw.items():
                if not _ALT_NAME.match(str(tname)):
                    diags.error(
                        f"template name '{tname}' may hold only letters, digits, '_', '.', '-'",
                        locs.key((*tsrc, tname)),
                    )
                    continue
                templates[str(tname)] = p.block(block, (*tsrc, tname), f"{TEMPLATE}={tname}/", ())
            p.add(Domain(TEMPLATE, "template", tuple(templates), loc=locs.key(tsrc)))
    constraints, closs = _constraints(raw.get("constraints"), (*src, "constraints"), locs, diags)
    assigns = p.block(raw, src, "", ("templates", "constraints"))
    if not p.domains and not diags:
        diags.error(
            "the search space is empty: no domain ({choice|int|float|oneof: ...}) or template",
            loc,
            hint="e.g. search: {d_model: {choice: [64, 128]}}",
        )
    return SearchSpace(assigns, templates, constraints, locs, loc, closs, dict(p.domains))


def _constraints(
    raw: Any, src: Path, locs: LocMap, diags: Collector
) -> tuple[dict[str, float], SourceLoc | None]:
    if raw is None:
        return {}, None
    if not isinstance(raw, dict):
        diags.error("'constraints' must be a mapping", locs.value(src))
        return {}, None
    out: dict[str, float] = {}
    for key, value in raw.items():
        kloc = locs.key((*src, key))
        if key not in CONSTRAINT_KEYS:
            diags.error(
                f"unknown constraint '{key}'",
                kloc,
                hint=did_you_mean(key, list(CONSTRAINT_KEYS))
                or f"known: {', '.join(CONSTRAINT_KEYS)}",
            )
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            diags.error(f"constraint {key} must be a positive number", locs.value((*src, key)))
        else:
            out[key] = value
    return out, locs.key(src)


def representatives(space: SearchSpace) -> Iterator[dict[str, Any]]:
    """A few parameter sets covering every template and every oneof alternative."""
    rounds = max([len(d.choices) for d in space.domains.values() if d.kind == "oneof"] + [1])
    for tname in space.template_names or [None]:
        for r in range(rounds):
            yield _representative(space, tname, r)


def _representative(space: SearchSpace, tname: str | None, r: int) -> dict[str, Any]:
    """Template `tname`, alternative r (mod n) of each oneof, the first/low value else."""
    params: dict[str, Any] = {}

    def get(d: Domain) -> Any:
        if d.kind == "template":
            value: Any = tname
        elif d.kind in ("int", "float"):
            value = int(d.low) if d.kind == "int" else d.low
        else:
            value = d.choices[r % len(d.choices)] if d.kind == "oneof" else d.choices[0]
        params[d.name] = value
        return value

    space.resolve(get)
    return params


def check_space(data: dict[str, Any], locs: LocMap, diags: Collector) -> SearchSpace | None:
    """Parse the `search:` section and check that every template and alternative yields a
    valid spec (unknown paths and bad values are reported where the search writes them)."""
    from archc.frontend.schema import build_spec

    space = parse_space(data["search"], locs, diags)
    if space is None or diags:
        return space
    seen: set[tuple[str, Any]] = set()
    for params in representatives(space):
        vlocs = LocMap(dict(locs.values), dict(locs.keys))
        try:
            build_spec(space.apply(data, vlocs, params), vlocs)
        except DiagnosticError as exc:
            for d in exc.diagnostics:
                if (d.message, d.loc) not in seen:
                    seen.add((d.message, d.loc))
                    diags.diagnostics.append(d)
    return space
