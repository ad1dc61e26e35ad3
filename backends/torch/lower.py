"""Torch lowering rules: one per op, as source text.

A rule gives (a) the Python expression that constructs the node's module, if it owns
one, and (b) the expression that computes its outputs from input variable names. The
same text builds the in-memory module (compiled with `exec`, as torch.fx does) and the
standalone model.py, so the two cannot drift apart. Values in the text come only from
validated IR attributes, written with `repr`.

For running a sequence chunk by chunk (generation), a rule also says how its op
behaves in time: `per_token` ops need nothing carried between chunks (positions read
the offset `pos`); stateful ops give `step`, the statements of their incremental form,
which read their entry of `state` and write it to `new_state`; `blocker` names a
node that looks at future tokens, so the model cannot run incrementally at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archc.backends.torch.custom_cell import cell_ctor, cell_source
from archc.backends.torch.modules import layers as L
from archc.ir.graph import Node
from archc.ir.ops_scan import NEWTON_CELLS
from archc.ir.types import TensorType, Type

Ctor = Callable[[Node, list[Type]], str | None]
Call = Callable[[Node, list[str], str], str]
# (node, input names, module expr, output names, state key expr) -> statements, or None
# when this node needs no carried state.
Step = Callable[[Node, list[str], str, list[str], str], list[str] | None]
# (node, input names, module expr, output names, run) -> statements; run(c, x) is the
# expression applying region c to the value named x (see Rule.regions).
RegionCall = Callable[[Node, list[str], str, list[str], Callable[[int, str], str]], list[str]]


def _never(node: Node) -> None:
    return None


def _no_growth(node: Node) -> bool:
    return False


@dataclass(frozen=True)
class Rule:
    """How one op lowers: module constructor text, call text, helper definitions used.

    Incremental form: `per_token` (output t depends on inputs at t only), else `step`;
    `blocker(node)` is why the node cannot run incrementally (None if it can);
    `grows(node)` is whether its carried state grows with every token (a KV cache).
    """

    ctor: Ctor
    call: Call
    deps: tuple[object, ...] = ()
    per_token: bool = False
    step: Step | None = None
    blocker: Callable[[Node], str | None] = _never
    grows: Callable[[Node], bool] = _no_growth
    # Module-level function definitions the constructor text refers to (custom cells'
    # generated step functions), or None.
    defs: Callable[[Node, list[Type]], str | None] = lambda node, ins: None
    # Control ops that own regions (other than `loop`, which codegen handles itself):
    # statements computing the outputs, given (node, input names, module expr, output
    # names, run) where run(c, x) is the expression that applies region c to the value
    # named x. When set, it replaces `call`/`step`; a `step` then only marks that the op
    # keeps one state entry of its own (key: its path) and runs its regions on private
    # state (the segment op; see codegen.region_op).
    regions: RegionCall | None = None
    # How many times `regions` text applies each region per forward (default: once
    # each). Each application k > 0 keeps state entries of its own: the text calls it
    # as run(c, x, k) (the select op's repeated layers).
    region_uses: Callable[[Node], tuple[int, ...]] | None = None


def _width(t: Type) -> int:
    assert isinstance(t, TensorType)
    return t.feature


def _no_module(node: Node, ins: list[Type]) -> None:
    return None


def _linear_ctor(node: Node, ins: list[Type]) -> str | None:
    a = node.attrs
    if a["weight_from"] is not None:
        return None if not a["bias"] else f"L.Bias({a['out']!r})"
    return f"nn.Linear({_width(ins[0])!r}, {a['out']!r}, bias={a['bias']!r})"


def _linear_call(node: Node, args: list[str], mod: str) -> str:
    src = node.attrs["weight_from"]
    if src is None:
        return f"{mod}({args[0]})"
    weight = f"m.{ident(src)}.weight"
    bias = f"{mod}.bias" if node.attrs["bias"] else "None"
    return f"F.linear({args[0]}, {weight}, {bias})"


def _norm_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    if a["kind"] == "rms":
        return f"nn.RMSNorm({d!r}, eps={a['eps']!r}, elementwise_affine={a['affine']!r})"
    return f"nn.LayerNorm({d!r}, eps={a['eps']!r}, elementwise_affine={a['affine']!r})"


_POINTWISE = {
    "gelu": "F.gelu({x})",
    "gelu_tanh": "F.gelu({x}, approximate='tanh')",
    "relu": "F.relu({x})",
    "silu": "F.silu({x})",
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "identity": "{x}",
}
_BINARY = {"add": "{a} + {b}", "mul": "{a} * {b}", "sub": "{a} - {b}"}


def _conv_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    groups = d if a["groups"] == 0 else a["groups"]
    return (
        f"L.CausalConv1d({d!r}, {a['out']!r}, {a['kernel']!r}, dilation={a['dilation']!r}, "
        f"groups={groups!r}, causal={a['causal']!r}, bias={a['bias']!r})"
    )


def _conv_step(
    node: Node, args: list[str], mod: str, outs: list[str], key: str
) -> list[str] | None:
    if not node.attrs["causal"]:
        return None
    return [f"{outs[0]}, new_state[{key}] = {mod}.step({args[0]}, state.get({key}))"]


def _conv_blocker(node: Node) -> str | None:
    if node.attrs["causal"]:
        return None
    return f"{node.path}: conv1d with causal=false reads future inputs"


def _posenc_ctor(node: Node, ins: list[Type]) -> str:
    a, d = node.attrs, _width(ins[0])
    if a["kind"] == "learned":
        return f"L.LearnedPositions({a['max_len']!r}, {d!r})"
    if a["kind"] == "sinusoidal":
        return f"L.SinusoidalPositions({a['max_len']!r}, {d!r})"
    return f"L.Rotary({a['heads']!r}, {d // a['heads']!r}, base={a['base']!r})"


def _attention_call(node: Node, args: list[str], mod: str) -> str:
    a = node.attrs
    return (
        f"L.attention({args[0]}, {args[1]}, {args[2]}, {a['heads']!r}, {a['kv_heads']!r}, "
        f"{a['mask'] == 'causal'!r}, {a['window']!r}, {a['dropout']!r}, self.training"
        + (f", chunk={a['chunk']!r})" if a.get("chunk") is not None else ")")
    )


def _attention_step(
    node: Node, args: list[str], mod: str, outs: list[str], key: str
) -> list[str] | None:
    a = node.attrs
    if a["mask"] != "causal":
        return None
    return [
        f"{outs[0]}, new_state[{key}] = L.attention_step({args[0]}, {args[1]}, {args[2]}, "
        f"state.get({key}), {a['heads']!r}, {a['kv_heads']!r}, {a['window']!r}, "
        f"{a['dropout']!r}, self.training"
        + (f", chunk={a['chunk']!r})" if a.get("chunk") is not None else ")")
    ]


def _attention_blocker(node: Node) -> str | None:
    if node.attrs["mask"] == "causal":
        return None
    return f"{node.path}: attention with mask '{node.attrs['mask']}' attends to future tokens"


# LSTM/GRU: nn.LSTM/nn.GRU subclasses (same parameters) that run archc's fused Triton
# kernels on CUDA when they apply (fused.py); plain RNNs: nn.RNN (cuDNN).
_RNN_CLASS = {
    "lstm": "L.FusedLSTM",
    "gru": "L.FusedGRU",
    "rnn_tanh": "nn.RNN",
    "rnn_relu": "nn.RNN",
}


def _cell_ctor(node: Node, d_in: int) -> str:
    """Constructor of a cells.py cell (leaky RNN, minGRU/minLSTM, SSMs, GLA, DeltaNet)."""
    a = node.attrs
    cell, h, mode = a["cell"], a["hidden"], a["mode"]
    if cell.startswith("leaky_"):
        return f"L.LeakyRNN({d_in!r}, {h!r}, bias={a['bias']!r}, nonlinearity={cell[6:]!r})"
    if cell in ("mingru", "minlstm"):
        cls = "L.MinGRU" if cell == "mingru" else "L.MinLSTM"
        return f"{cls}({d_in!r}, {h!r}, bias={a['bias']!r}, mode={mode!r})"
    if cell == "diag_gru":
        return (
            f"L.DiagGRU({d_in!r}, {h!r}, bias={a['bias']!r}, mode={mode!r}, "
            f"iters={a['iters']!r}, tol={a['tol']!r})"
        )
    if cell == "diag_lstm":
        return (
            f"L.DiagLSTM({d_in!r}, {h!r}, bias={a['bias']!r}, mode={mode!r}, "
            f"iters={a['iters']!r}, tol={a['tol']!r})"
        )
    if cell in ("diag_rnn", "block_rnn"):
        newton = f"mode={mode!r}, iters={a['iters']!r}, tol={a['tol']!r}"
        return f"L.StructuredRNN({d_in!r}, {h!r}, {a['block']!r}, bias={a['bias']!r}, {newton})"
    if cell.startswith("s4d_"):
        return f"L.S4D({h!r}, {a['state']!r}, disc={cell[4:]!r}, mode={mode!r})"
    if cell == "gla":
        dk = a["state"] or h // a["heads"]
        return f"L.GLA({h!r}, {a['heads']!r}, {dk!r}, mode={mode!r}, chunk={a['chunk']!r})"
    if cell == "plstm":
        dk = a["state"] or h // a["heads"]
        return f"L.PLSTM({h!r}, {a['heads']!r}, {dk!r}, mode={mode!r}, chunk={a['chunk']!r})"
    if cell == "delta":
        return f"L.DeltaNet({h!r}, {a['heads']!r}, mode={mode!r}, chunk={a['chunk']!r})"
    if cell == "aaren":
        return f"L.Aaren({h!r}, {a['heads']!r}, mode={mode!r})"
    if cell == "lru":
        return f"L.LRU({h!r}, {a['state']!r})"
    return f"L.SelectiveSSM({h!r}, {a['state']!r}, mode={mode!r})"


def _scan_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    if a["cell"] in ("custom", "custom_diag"):
        return cell_ctor(node, _width(ins[0]))
    if a["cell"] not in _RNN_CLASS:
        cell = _cell_ctor(node, _width(ins[0]))
        # Two independent cells of one class: parameters under fwd. / bwd.
        return f"L.Bidirectional({cell}, {cell})" if a["bidirectional"] else cell
    extra = ""
    if a["cell"].startswith("rnn_"):
        extra = f", nonlinearity={a['cell'][4:]!r}"
    return (
        f"{_RNN_CLASS[a['cell']]}({_width(ins[0])!r}, {a['hidden']!r}, "
        f"num_layers={a['layers']!r}, bias={a['bias']!r}, batch_first=True, "
        f"bidirectional={a['bidirectional']!r}{extra})"
    )


def _scan_call(node: Node, args: list[str], mod: str) -> str:
    # nn.LSTM/GRU/RNN: the fused ATen sequential kernels, exact oracles of themselves;
    # rnn_forward packs the batch when the model's forward got `lengths`. The cells.py
    # cells share their interface: (x, initial carry, lengths) -> (y, final carry).
    if node.attrs["cell"] in _RNN_CLASS:
        return f"L.rnn_forward({mod}, {args[0]}, None, lengths)"
    return f"{mod}({args[0]}, lengths=lengths)"


def _scan_step(node: Node, args: list[str], mod: str, outs: list[str], key: str) -> list[str]:
    # The carry is the node's second output. A bidirectional scan cannot continue, but
    # still takes initial carries and returns its final ones. The diagonal GRU streams
    # with its exact step (a Newton solve pays off over long sequences, not chunks).
    # `lengths` applies to the chunk at hand (e.g. right-padded prompts of a batch).
    exact = ", exact=True" if node.attrs["cell"] in NEWTON_CELLS else ""
    call = f"{mod}({args[0]}, state.get({key}), lengths=lengths{exact})"
    if node.attrs["cell"] in _RNN_CLASS:
        call = f"L.rnn_forward({mod}, {args[0]}, state.get({key}), lengths)"
    return [
        f"{', '.join(outs)} = {call}",
        f"new_state[{key}] = {outs[1]}",
    ]


def _scan_defs(node: Node, ins: list[Type]) -> str | None:
    if node.attrs["cell"] not in ("custom", "custom_diag"):
        return None
    return cell_source(node, _width(ins[0]))


def _scan_blocker(node: Node) -> str | None:
    if not node.attrs["bidirectional"]:
        return None
    return f"{node.path}: a bidirectional {node.attrs['cell']} reads the sequence backwards"


# A fast-weight segment carry runs the DeltaNet cell and what it calls.
_FAST_WEIGHT_DEPS = (L.valid_steps, L.zero_past, L.matrix_scan, L._heads, L.DeltaNet)


def _segment_ctor(node: Node, ins: list[Type]) -> str:
    a = node.attrs
    return (
        f"L.SegmentRecurrence({_width(ins[0])!r}, {a['length']!r}, {a['carry']!r}, "
        f"mem={a['mem']!r}, window={a['window']!r}, bptt={a['bptt']!r}, recall={a['recall']!r}, "
        f"heads={a['heads']!r}, sensory={a['sensory']!r})"
    )


def _segment_regions(
    node: Node, args: list[str], mod: str, outs: list[str], run: Callable[[int, str], str]
) -> list[str]:
    # The module calls the body once per segment with its own incremental flag, offset
    # and state dicts (the lambda's parameters shadow the model's), and no lengths.
    call = run(0, "x_")
    body = f"lambda x_, inc, pos, state, new_state, lengths=None: {call}"
    # Inside a loop the region call carries the step suffix `sfx`; so does the key.
    key = f"{node.path!r} + sfx" if "sfx + " in call else repr(node.path)
    return [
        "if inc:",
        f"    {outs[0]}, new_state[{key}] = {mod}.step({args[0]}, state.get({key}), {body})",
        "else:",
        f"    {outs[0]} = {mod}({args[0]}, {body})",
    ]


RULES: dict[str, Rule] = {
    "embed": Rule(
        lambda n, i: f"nn.Embedding({n.attrs['vocab']!r}, {n.attrs['dim']!r})",
        lambda n, a, m: f"{m}({a[0]})",
        per_token=True,
    ),
    "linear": Rule(_linear_ctor, _linear_call, (L.Bias,), per_token=True),
    "norm": Rule(_norm_ctor, lambda n, a, m: f"{m}({a[0]})", per_token=True),
    "pointwise": Rule(
        _no_module, lambda n, a, m: _POINTWISE[n.attrs["fn"]].format(x=a[0]), per_token=True
    ),
    "binary": Rule(
        _no_module,
        lambda n, a, m: _BINARY[n.attrs["fn"]].format(a=a[0], b=a[1]),
        per_token=True,
    ),
    "split": Rule(
        _no_module,
        lambda n, a, m: f"torch.split({a[0]}, {list(n.attrs['sizes'])!r}, dim=-1)",
        per_token=True,
    ),
    "dropout": Rule(
        _no_module,
        lambda n, a, m: f"F.dropout({a[0]}, {n.attrs['p']!r}, self.training)",
        per_token=True,
    ),
    "conv1d": Rule(
        _conv_ctor,
        lambda n, a, m: f"{m}({a[0]})",
        (L.CausalConv1d,),
        step=_conv_step,
        blocker=_conv_blocker,
    ),
    # Positions read the offset `pos` of the chunk (0 when not continuing a sequence).
    "posenc": Rule(
        _posenc_ctor,
        lambda n, a, m: f"{m}({a[0]}, pos)",
        (L.position_rows, L.LearnedPositions, L.SinusoidalPositions, L.Rotary),
        per_token=True,
    ),
    "attention": Rule(
        _no_module,
        _attention_call,
        (L.split_heads, L.repeat_kv, L.attention, L.attention_step),
        step=_attention_step,
        blocker=_attention_blocker,
        grows=lambda n: n.attrs["window"] is None and n.attrs.get("chunk") is None,
    ),
    "scan": Rule(
        _scan_ctor,
        _scan_call,
        (
            L.valid_steps,
            L.over_time,
            L.zero_past,
            L.step_mask,
            L.newton_solver,
            L.rnn_forward,
            L.reverse_within,
            L.Bidirectional,
            L.diag_scan,
            L.matrix_scan,
            L._heads,
            L.LeakyRNN,
            L.MinGRU,
            L.MinLSTM,
            L.DiagGRU,
            L.DiagLSTM,
            L.StructuredRNN,
            L.S4D,
            L.LRU,
            L.SelectiveSSM,
            L.GLA,
            L.DeltaNet,
            L.KernelHook,
            L.fused_rnn,
            L.fused_rnn_layers,
            L._fused_rnn_refusal,
            L.FusedLSTM,
            L.FusedGRU,
            L.fused_leaky_rnn,
            L.Aaren,
            L.PLSTM,
            L.CustomCell,
        ),
        step=_scan_step,
        blocker=_scan_blocker,
        defs=_scan_defs,
    ),
    "segment": Rule(
        _segment_ctor,
        lambda n, a, m: "",
        (L.detach_carry, L.window_kv, L.SegmentRecurrence, *_FAST_WEIGHT_DEPS),
        # `step` marks the op as keeping its own state entry (see codegen.region_op);
        # the statements come from `regions`.
        step=lambda n, a, m, o, k: None,
        regions=lambda n, a, m, o, run: _segment_regions(n, a, m, o, run),
    ),
}


def ident(path: str) -> str:
    """The attribute name a module at `path` gets in the generated code's namespace."""
    return "".join(ch if ch.isalnum() else "_" for ch in path)


def incremental_blocker(node: Node) -> str | None:
    """Why `node` stops its model from running chunk by chunk (None if it does not)."""
    rule = get_rule(node.op)
    why = rule.blocker(node)
    if why is None and not rule.per_token and rule.step is None:
        why = f"{node.path}: op '{node.op}' has no incremental form in the torch backend"
    return why


def get_rule(op: str) -> Rule:
    rule = RULES.get(op)
    if rule is None:
        raise NotImplementedError(f"the torch backend has no rule for op '{op}'")
    return rule


# The select ops' rules (lower_select.py builds on Rule and get_rule above).
from archc.backends.torch.lower_select import SELECT_RULES  # noqa: E402

RULES.update(SELECT_RULES)

# The hier op's rule (lower_hier.py builds on Rule above).
from archc.backends.torch.lower_hier import HIER_RULES  # noqa: E402

RULES.update(HIER_RULES)

# The neural-memory ops' rules (lower_memory.py builds on Rule above).
from archc.backends.torch.lower_memory import MEMORY_RULES  # noqa: E402

RULES.update(MEMORY_RULES)

# The halt op's rule (lower_loop.py builds on Rule above).
from archc.backends.torch.lower_loop import HALT_RULES  # noqa: E402

RULES.update(HALT_RULES)

# The const / scale / reshape / rearrange rules (lower_const.py builds on Rule above).
from archc.backends.torch.lower_const import CONST_RULES  # noqa: E402

RULES.update(CONST_RULES)

# The fused_pointwise rule (lower_fused.py builds on Rule above).
from archc.backends.torch.lower_fused import FUSED_RULES  # noqa: E402

RULES.update(FUSED_RULES)

# The prefix-conditioned ops' rules (lower_prefix.py builds on Rule above).
from archc.backends.torch.lower_prefix import PREFIX_RULES  # noqa: E402

RULES.update(PREFIX_RULES)
