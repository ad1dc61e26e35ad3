"""Graph -> Python source of an nn.Module (shared by in-memory compile and standalone emit).

The generated `forward(x, state=None, return_state=False)` is straight-line code. A
stateful node (KV cache, conv inputs, recurrent carry) gets one branch: `inc` (a state
is given or asked for) runs its rule's incremental form, which reads the node's entry
of `state` and writes `new_state`; otherwise the plain form runs, so the training path
pays one boolean test per stateful node and nothing per token.

State entries are keyed by node path; inside a loop a node runs once per step, so its
key also names the step: `path#2`, or `path#1#0` in nested loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archc.backends.torch.lower import Rule, get_rule, ident, incremental_blocker
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Graph, Node, Value
from archc.ir.ops_loop import lora_linears, needs_readout
from archc.ir.readout import readout_of


@dataclass
class ModelSource:
    """Generated pieces: module-level definitions and the Model class."""

    text: str
    modules: list[tuple[str, str]] = field(default_factory=list)  # (path, ctor source)
    init: dict[str, str] = field(default_factory=dict)  # parameter name -> initializer
    deps: list[object] = field(default_factory=list)  # helper classes/functions used
    state_keys: list[str] = field(default_factory=list)  # entries of the carried state
    initial_keys: list[str] = field(default_factory=list)  # recurrent carries a caller may set
    blocker: str = ""  # why the model cannot run incrementally ('' if it can)
    grows: bool = False  # some state entry grows with every token (a KV cache)


class _Gen:
    def __init__(self) -> None:
        self.out = ModelSource("")
        self.functions: list[str] = []
        self.lora: dict[str, tuple[str, int]] = {}  # linear path -> (loop module, adapter)

    def use(self, dep: object) -> None:
        if dep not in self.out.deps:
            self.out.deps.append(dep)

    def body(
        self,
        graph: Graph,
        arg: str,
        indent: str,
        suffixes: tuple[str, ...] = ("",),
        top: bool = False,
    ) -> tuple[list[str], str]:
        """Statements computing `graph` from input variable `arg`; returns (lines, result).

        `suffixes` are the step suffixes the statements run under (("",) outside loops);
        inside a loop region they arrive as the variable `sfx`. `top`: `graph` is the
        model's own graph (a halt there may need the layers after it as a readout).
        """
        names: dict[Value, str] = {}
        lines: list[str] = []
        skip: set[int] = set()  # nodes emitted inside a readout function
        for node in graph.nodes():
            if node.id in skip:
                continue
            if node.op == "input":
                names[node.out()] = arg
                continue
            args = [names[v] for v in node.inputs]
            outs = (
                [f"v{node.id}"]
                if len(node.outputs) == 1
                else [f"v{node.id}_{k}" for k in range(len(node.outputs))]
            )
            for k, o in enumerate(outs):
                names[node.out(k)] = o
            if node.op == "loop":
                lines += self.loop(node, args[0], outs[0], indent, suffixes)
            elif node.op == "halt":  # like a loop: its body's state is keyed per step
                readout = f"_{ident(node.path)}_readout" if top and needs_readout(node) else None
                lines += self.halt(graph, node, args[0], outs[0], indent, suffixes, readout)
                if readout is not None:  # after the halt's own module: keep module order
                    skip |= self.readout(graph, node, readout)
                    res = f"v{node.id}_out"
                    call = f"{readout}(self, m, {outs[0]}, inc, pos, state, new_state, '', lengths)"
                    lines.append(f"{indent}{res} = {call}")
                    names[graph.outputs[0]] = res
            elif get_rule(node.op).regions is not None:
                lines += self.region_op(graph, node, args, outs, indent, suffixes)
            else:
                lines += self.node(graph, node, args, outs, indent, suffixes)
        return lines, names[graph.outputs[0]]

    def own(self, graph: Graph, node: Node, rule: Rule) -> None:
        """Register what `node` brings along: its rule's helper definitions, its module
        (constructor text), its parameters' initialisers, and why it blocks incremental
        runs (the first reason found is the model's)."""
        for dep in rule.deps:
            self.use(dep)
        ins = [graph.type_of(v) for v in node.inputs]
        defs = rule.defs(node, ins)
        if defs is not None and defs not in self.functions:
            self.functions.append(defs)
        ctor = rule.ctor(node, ins)
        if ctor is not None:
            self.out.modules.append((node.path, ctor))
        for p in node.params:
            self.out.init[f"{node.path}.{p.name}"] = p.init
        why = incremental_blocker(node)
        if why is not None and not self.out.blocker:
            self.out.blocker = why

    def node(
        self,
        graph: Graph,
        node: Node,
        args: list[str],
        outs: list[str],
        indent: str,
        suffixes: tuple[str, ...],
    ) -> list[str]:
        rule = get_rule(node.op)
        self.own(graph, node, rule)
        mod = f"m.{ident(node.path)}"
        plain = f"{', '.join(outs)} = {rule.call(node, args, mod)}"
        if node.path in self.lora:  # a linear inside a LoRA loop: add this step's B A x
            owner, t = self.lora[node.path]
            plain = f"{outs[0]} = {owner}.adapt({t!r}, {args[0]}, {rule.call(node, args, mod)})"
        key = repr(node.path) if suffixes == ("",) else f"{node.path!r} + sfx"
        step = None if rule.step is None else rule.step(node, args, mod, outs, key)
        if step is None:
            return [indent + plain]
        keys = [node.path + s for s in suffixes]
        self.out.state_keys += keys
        if node.op == "scan":
            self.out.initial_keys += keys
        self.out.grows = self.out.grows or rule.grows(node)
        return [
            f"{indent}if inc:",
            *(f"{indent}    {s}" for s in step),
            f"{indent}else:",
            f"{indent}    {plain}",
        ]

    def region_function(
        self, name: str, region: Graph, suffixes: tuple[str, ...], doc: str
    ) -> None:
        """Define `name(self, m, x, inc, pos, state, new_state, sfx, lengths)` computing
        `region` from x; it runs under `suffixes` (`sfx` at run time names which)."""
        inner, result = self.body(region, "x", "    ", suffixes)
        self.functions.append(
            f"def {name}(self, m, x, inc, pos, state, new_state, sfx, lengths):\n"
            + f'    """{doc} sfx names the state entries of this run."""\n'
            + "\n".join(inner)
            + f"\n    return {result}\n"
        )

    def region_op(
        self,
        graph: Graph,
        node: Node,
        args: list[str],
        outs: list[str],
        indent: str,
        suffixes: tuple[str, ...],
    ) -> list[str]:
        """A control op with regions (hier, segment, memory, ...): each region becomes a
        function like a loop step's; the rule's `regions` text decides how to call them.
        State keys inside a region get the suffix "/<c>" of the region."""
        rule = get_rule(node.op)
        assert rule.regions is not None
        self.own(graph, node, rule)
        # A rule with `step` keeps one state entry of its own (a segment op's carry) and
        # runs its regions on private state: their entries are not the model's.
        own = rule.step is not None
        saved = (list(self.out.state_keys), list(self.out.initial_keys), self.out.grows)
        fns = []
        uses = rule.region_uses(node) if rule.region_uses else (1,) * len(node.regions)
        for c, region in enumerate(node.regions):
            name = f"_{ident(node.path)}_r{c}"
            # Application k > 0 of a region keeps its own state entries, suffix "/<c>+k".
            tags = [f"/{c}+{k}" if k else f"/{c}" for k in range(uses[c])]
            mine = tuple(s + t for s in suffixes for t in tags)
            self.region_function(name, region, mine, f"Region {c} of {node.op} {node.path}.")
            fns.append(name)

        def run(c: int, x: str, k: int = 0) -> str:
            tag = f"/{c}+{k}" if k else f"/{c}"
            sfx = f"'{tag}'" if suffixes == ("",) else f"sfx + '{tag}'"
            return f"{fns[c]}(self, m, {x}, inc, pos, state, new_state, {sfx}, lengths)"

        stmts = rule.regions(node, args, f"m.{ident(node.path)}", outs, run)
        if own:
            self.out.state_keys, self.out.initial_keys, self.out.grows = saved
            self.out.state_keys += [node.path + s for s in suffixes]
            self.out.grows = self.out.grows or rule.grows(node)
        return [indent + line for line in stmts]

    def readout(self, graph: Graph, node: Node, name: str) -> set[int]:
        """Emit the layers after a top-level halt as the function `name` (see
        archc/ir/readout.py) that the forward applies to the halt's result and the halt
        module applies to every step's state in training; returns the nodes it covers."""
        sub = readout_of(graph, node)
        assert not isinstance(sub, str), sub  # the builder's check_readouts refused these
        self.region_function(name, sub, ("",), f"The layers after halt {node.path}.")
        return {n.id for n in sub.nodes() if n.op != "input"}

    def halt(
        self,
        graph: Graph,
        node: Node,
        arg: str,
        out: str,
        indent: str,
        suffixes: tuple[str, ...],
        readout: str | None = None,
    ) -> list[str]:
        """A halt (modules/loops.py `Halt`): the module calls the region once per step
        with the step's suffix, so an incremental run keeps one cache per step. With a
        `readout` function it also scores every step's prediction in training."""
        self.own(graph, node, get_rule(node.op))
        name = f"_{ident(node.path)}_0"
        mine = tuple(f"{s}#{i}" for s in suffixes for i in range(node.attrs["max_steps"]))
        self.region_function(name, node.regions[0], mine, f"Step of halt {node.path}.")
        self.out.state_keys += [node.path + s for s in suffixes]
        key = repr(node.path) if suffixes == ("",) else f"{node.path!r} + sfx"
        sfx = 'f"#{i_}"' if suffixes == ("",) else 'f"{sfx}#{i_}"'
        body = f"lambda z_, i_: {name}(self, m, z_, inc, pos, state, new_state, {sfx}, lengths)"
        mod = f"m.{ident(node.path)}"
        carry = f"state.get({key}, {{}}) if inc else None"
        call = f"{mod}({arg}, {body}, {carry})"
        if readout is not None:  # per-step predictions write no state
            head = f"lambda z_: {readout}(self, m, z_, False, pos, None, None, '', lengths)"
            call = f"{mod}({arg}, {body}, {carry}, {head})"
        return [
            f"{indent}{out}, _carry = {call}",
            f"{indent}if inc:",
            f"{indent}    new_state[{key}] = _carry",
        ]

    def loop(
        self, node: Node, arg: str, out: str, indent: str, suffixes: tuple[str, ...]
    ) -> list[str]:
        """A loop (archc/ir/ops_loop.py): its regions become step functions, called from
        a Python loop that adds injection, the gradient policy, LoRA slots and sampled
        step counts as the node's attributes ask."""
        a = node.attrs
        steps, copies = a["steps"], a["copies"]
        mod = f"m.{ident(node.path)}"
        if node.params:
            self.use(L.LoraAdapter)
            self.use(L.LoopExtras)
            d = node.outputs[0].feature  # type: ignore[union-attr]
            ctor = f"L.LoopExtras({d!r}, {a['inject']!r}, {a['lora']!r}, {a['lora_targets']!r})"
            self.out.modules.append((node.path, ctor))
            for p in node.params:
                self.out.init[f"{node.path}.{p.name}"] = p.init
        if a["lora"]:
            for t, (lin, _) in enumerate(lora_linears(node.regions)):
                self.lora[lin.path] = (mod, t)  # type: ignore[attr-defined]
        fns = []
        for c, region in enumerate(node.regions):
            name = f"_{ident(node.path)}_{c}"
            mine = tuple(f"{s}#{i}" for s in suffixes for i in range(steps) if i % copies == c)
            doc = f"Step of loop {node.path} with weight copy {c}."
            self.region_function(name, region, mine, doc)
            fns.append(name)
        lines = []
        n = repr(steps)
        if a["sampler"]:
            self.use(L.loop_steps)
            kind, rest_ = a["sampler"].split("(")
            lo, _, hi = rest_.rstrip(")").partition(",")
            n = f"_n{node.id}"
            lines.append(
                f"{indent}{n} = L.loop_steps({kind!r}, {float(lo)!r}, {float(hi or 0)!r}, "
                f"{steps!r}, self.training)"
            )
        # With injection the carried state starts at zero and x re-enters every step.
        start = arg if a["inject"] == "none" else f"torch.zeros_like({arg})"
        lines += [f"{indent}{out} = {start}", f"{indent}for _step in range({n}):"]
        body = indent + "    "
        if a["grad"]:
            # Only the last `grad` iterations record the graph: earlier ones run under
            # no_grad, so the state entering the first recorded one is detached.
            lines.append(
                f"{body}with torch.set_grad_enabled(torch.is_grad_enabled() and "
                f"_step >= {n} - {a['grad']!r}):"
            )
            body += "    "
        if a["lora"]:
            lines.append(f"{body}{mod}.slot = _step // {copies!r}")
        x = out
        if a["inject"] == "add":
            x = f"{out} + {arg}"
        elif a["inject"] == "concat":
            x = f"{mod}.combine({out}, {arg})"
        sfx = 'f"#{_step}"' if suffixes == ("",) else 'f"{sfx}#{_step}"'
        rest = f"{x}, inc, pos, state, new_state, {sfx}, lengths)"
        if copies == 1:
            lines.append(f"{body}{out} = {fns[0]}(self, m, {rest}")
        else:
            table = f"_{ident(node.path)}_copies"
            self.functions.append(f"{table} = ({', '.join(fns)},)\n")
            lines.append(f"{body}{out} = {table}[_step % {copies}](self, m, {rest}")
        return lines


def _set(keys: list[str]) -> str:
    """A frozenset literal, one key per line."""
    if not keys:
        return "frozenset()"
    return "frozenset({\n" + "".join(f"    {k!r},\n" for k in keys) + "})"


def model_source(graph: Graph, base: str = "nn.Module") -> ModelSource:
    """Module-level source defining `class Model(<base>)` for `graph`."""
    gen = _Gen()
    gen.use(L.open_state)
    lines, result = gen.body(graph, "x", "        ", top=True)
    out = gen.out
    init_lines = [f"        L.place(self, {path!r}, {ctor})" for path, ctor in out.modules]
    ns = ", ".join(f"{ident(p)}=self.get_submodule({p!r})" for p, _ in out.modules)
    text = "\n".join(
        [
            *gen.functions,
            f"class Model({base}):",
            f'    """{graph.name}: generated by archc from its graph IR."""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *init_lines,
            f"        self._m = SimpleNamespace({ns})",
            "",
            "    def reset_parameters(self, seed: int | None = None) -> None:",
            "        L.init_parameters(self, INIT, seed)",
            "",
            "    def incremental_support(self) -> tuple[bool, str]:",
            '        """(True, "") if forward can continue a sequence from a state, else',
            '        (False, why)."""',
            "        return not BLOCKER, BLOCKER",
            "",
            "    def constant_state(self) -> bool:",
            '        """True if the carried state keeps its size as tokens are added."""',
            "        return CONSTANT_STATE",
            "",
            "    def forward(self, x, state=None, return_state=False, lengths=None):",
            '        """x: token ids (B, T) or features (B, T, D) -> (B, T, out).',
            "",
            "        `y, state = forward(x, return_state=True)` also returns the state after x;",
            "        `forward(x_next, state=state, ...)` continues that sequence from it.",
            "        `lengths` (B,) int64, each in 1..T: x is a right-padded batch; every",
            "        recurrence stops at each sequence's length (its outputs past it are 0,",
            "        its carry the sequence's own); other ops ignore it, so valid positions",
            "        equal running each sequence alone unless an op looks ahead (mask none).",
            '        """',
            "        m = self._m",
            "        inc = state is not None or return_state",
            "        pos, new_state = 0, None",
            "        if inc:",
            "            pos, state = L.open_state(state, STATE_KEYS, INITIAL_KEYS, BLOCKER)",
            "            new_state = {'_pos': pos + x.shape[1]}",
            *lines,
            "        if return_state:",
            f"            return {result}, new_state",
            f"        return {result}",
            "",
        ]
    )
    init = "INIT = {\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in out.init.items()) + "}\n"
    meta = "\n".join(
        [
            "# The carried state of forward(..., return_state=True): '_pos' (tokens seen) and",
            "# these entries; a new sequence may set INITIAL_KEYS (recurrent carries) alone.",
            f"STATE_KEYS = {_set(out.state_keys)}",
            f"INITIAL_KEYS = {_set(out.initial_keys)}",
            f"BLOCKER = {out.blocker!r}  # why it cannot continue a sequence ('' if it can)",
            f"CONSTANT_STATE = {not out.blocker and not out.grows!r}  # same size after any tokens",
            "",
        ]
    )
    out.text = init + "\n" + meta + "\n\n" + text
    return out
