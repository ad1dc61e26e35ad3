"""The registry of spec components: what a layer in a spec may name, and its parameters.

A spec can only name components registered here (or blocks it `define`s itself); it
never imports or runs Python. Each component has a pydantic parameter model
(`extra="forbid"`), an optional *primary* parameter that a scalar shorthand fills
(`norm: rms` means `norm: {kind: rms}`, `norm(rms)` in the DSL), and says whether it
takes a body of nested layers. User extensions call `register_component`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Params(BaseModel):
    """Base of every component's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedParams(Params):
    dim: int | None = Field(default=None, gt=0, description="width (default d_model)")


class PosencParams(Params):
    kind: Literal["learned", "sinusoidal"] = "learned"
    max_len: int = Field(default=2048, gt=0)


class LinearParams(Params):
    out: int | None = Field(default=None, gt=0, description="output width (default: input)")
    bias: bool = True


class NormParams(Params):
    kind: Literal["rms", "layer"] = "rms"
    eps: float = Field(default=1e-5, gt=0)
    affine: bool = True


Activation = Literal["gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid", "identity"]


class ActParams(Params):
    fn: Activation = "gelu"


class DropoutParams(Params):
    p: float = Field(default=0.1, ge=0.0, lt=1.0)


class BodyParams(Params):
    """Containers whose only content is their body (residual, seq)."""


class MlpParams(Params):
    mult: float = Field(default=4.0, gt=0)
    hidden: int | None = Field(default=None, gt=0)
    act: Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu", "reglu"] = "gelu"
    bias: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class GateParams(Params):
    """A gated unit (GLU / GAU / MossFormer's GCU): two projections of x to `hidden`
    channels, u = W_u x + b_u and v = W_v x + b_v; the body runs on v (keeping its width)
    and the output is act(u) * body(v), (B, T, hidden). `act: sigmoid` with an identity
    body is the GLU."""

    hidden: int | None = Field(default=None, gt=0, description="gate width (default: input)")
    act: Activation = Field(default="sigmoid", description="applied to the gate u")
    bias: bool = True


class Conv1dParams(Params):
    kernel: int = Field(default=4, gt=0)
    out: int | None = Field(default=None, gt=0)
    dilation: int = Field(default=1, gt=0)
    groups: int | Literal["depthwise"] = 1
    causal: bool = True
    bias: bool = True

    @field_validator("groups")
    @classmethod
    def _positive_groups(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError("groups must be positive")
        return v


class AttentionParams(Params):
    heads: int = Field(default=4, gt=0)
    kv_heads: int | None = Field(default=None, gt=0, description="grouped-query heads")
    mask: Literal["causal", "none"] = "causal"
    window: int | None = Field(default=None, gt=0, description="sliding window (tokens)")
    chunk: int | None = Field(
        default=None, gt=0, description="attend only inside non-overlapping chunks (TCNCA)"
    )
    rank: int | None = Field(
        default=None, gt=0, description="low-rank q/k projections: d -> rank -> d"
    )
    pos: Literal["none", "rope"] = "none"
    rope_base: float = Field(default=10000.0, gt=0)
    bias: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class HeadParams(Params):
    out: int | None = Field(default=None, gt=0, description="output width (default: vocab)")
    tied: bool = False
    bias: bool = False


class RecurrentParams(Params):
    hidden: int | None = Field(default=None, gt=0)
    layers: int = Field(default=1, gt=0)
    bidirectional: bool = False
    bias: bool = True


ScanMode = Literal["auto", "sequential", "associative", "chunked", "newton"]


class NewtonRecurrentParams(RecurrentParams):
    """Fields of the recurrences that can be solved by Newton's method (ParaRNN) when
    their recurrent weights are structured (`recurrent: diagonal`, or `block`)."""

    newton_iters: int | None = Field(
        default=None, gt=0, description="structured only: Newton iteration budget (default 8)"
    )
    newton_tol: float | None = Field(
        default=None, gt=0, description="structured only: Newton tolerance (default 1e-6)"
    )


class RnnParams(NewtonRecurrentParams):
    """Elman RNN; `act: leaky` is the leaky / tau RNN h_t = (1 - 1/tau) h_{t-1} +
    (1/tau) nonlinearity(W_ih x_t + W_hh h_{t-1} + b) with a trainable per-unit tau >= 1
    (one layer, one direction). `recurrent: diagonal` (per-unit weights) or `block`
    (k x k blocks, `block: k`) makes a tanh RNN that `mode: newton` solves in parallel."""

    act: Literal["tanh", "relu", "leaky"] = "tanh"
    nonlinearity: Literal["tanh", "relu"] = Field(
        default="tanh", description="the leaky RNN's nonlinearity (act: leaky only)"
    )
    recurrent: Literal["full", "diagonal", "block"] = "full"
    block: int | None = Field(
        default=None, gt=0, description="recurrent: block only: the block size k"
    )
    mode: ScanMode = Field(
        default="auto", description="auto | sequential (| newton for recurrent: diagonal/block)"
    )


class GruParams(NewtonRecurrentParams):
    """GRU. `recurrent: full` (default) is torch.nn.GRU; `recurrent: diagonal` is the
    ParaRNN diagonal GRU (dense input projection, per-unit recurrent weights), which can
    solve the whole sequence at once by Newton's method (`mode: newton`). `mode`,
    `newton_iters` and `newton_tol` apply to `recurrent: diagonal` only."""

    recurrent: Literal["full", "diagonal"] = "full"
    mode: ScanMode | None = Field(
        default=None,
        description="diagonal only: auto (Newton on CUDA, the loop on CPU) | sequential | newton",
    )


class LstmParams(NewtonRecurrentParams):
    """LSTM. `recurrent: full` (default) is torch.nn.LSTM; `recurrent: diagonal` is the
    ParaRNN diagonal LSTM (ParaLSTM: dense input projection, per-unit recurrent weights,
    2 x 2 block-diagonal Jacobian in (c, h)), which `mode: newton` solves over the whole
    sequence at once. `mode`, `newton_iters` and `newton_tol` apply to diagonal only."""

    recurrent: Literal["full", "diagonal"] = "full"
    mode: ScanMode | None = Field(
        default=None,
        description="diagonal only: auto (Newton on CUDA, the loop on CPU) | sequential | newton",
    )


class MinRnnParams(Params):
    """minGRU / minLSTM (Feng et al. 2024): gates read x_t only, so the recurrence is
    linear in h and runs as a parallel scan."""

    hidden: int | None = Field(default=None, gt=0)
    bias: bool = True
    mode: ScanMode = Field(default="auto", description="auto | sequential | associative | chunked")
    bidirectional: bool = Field(
        default=False, description="also run it backwards; outputs concatenated (2x width)"
    )


class SsmParams(Params):
    """Diagonal linear state-space layer over D channels, each with `state` N states."""

    hidden: int | None = Field(
        default=None, gt=0, description="channels; must equal the input width (default)"
    )
    kind: Literal["s4d", "lru", "selective"] = "s4d"
    state: int = Field(default=16, gt=0, description="states per channel (N)")
    disc: Literal["zoh", "bilinear"] = Field(default="zoh", description="s4d discretisation")
    mode: ScanMode = Field(
        default="auto", description="auto | sequential | associative | chunked (not lru)"
    )
    bidirectional: bool = Field(
        default=False, description="also run it backwards; outputs concatenated (2x width)"
    )


class KeyedMatrixParams(Params):
    """The settings shared by the matrix-state layers with a free key width (gla,
    plstm): per head a (key_dim, D/heads) state, run sequentially or in chunks."""

    heads: int = Field(default=4, gt=0)
    key_dim: int | None = Field(
        default=None, gt=0, description="key/query width per head (default D / heads)"
    )
    mode: ScanMode = Field(default="auto", description="auto | sequential | chunked")
    chunk: int = Field(default=64, gt=0, description="chunk length of the chunked mode")
    bidirectional: bool = Field(
        default=False, description="also run it backwards; outputs concatenated (2x width)"
    )


class GlaParams(KeyedMatrixParams):
    """Gated linear attention (Yang et al. 2023): per head a (key_dim, D/heads) matrix
    state S_t = diag(g_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t, with a per-key-dim decay
    log g_t = logsigmoid(W_g x_t + b_g) / 16."""


class PlstmParams(KeyedMatrixParams):
    """pLSTM, 1-D case (Pöppel et al. 2025): per head a (key_dim, D/heads) matrix state
    C_t = T_t C_{t-1} + S_t k_t^T v_t, o_t = M_t q_t C_t, with per-head input-dependent
    source S_t = sigmoid(.), signed transition T_t = tanh(.) (P-mode, |T_t| < 1) and
    mark M_t = sigmoid(.)."""


class DeltaParams(Params):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024): per head a (D/heads, D/heads)
    state S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}), o_t = q_t S_t, with q, k
    L2-normalised per head and beta_t = sigmoid(W_b x_t + b_b) per head."""

    heads: int = Field(default=4, gt=0)
    mode: ScanMode = Field(default="auto", description="auto | sequential | chunked")
    chunk: int = Field(default=64, gt=0, description="chunk length of the chunked mode")
    bidirectional: bool = Field(
        default=False, description="also run it backwards; outputs concatenated (2x width)"
    )


class AarenParams(Params):
    """Aaren (Feng et al. 2024, attention as an RNN): per head a learned query q attends
    causally over keys W_k x and values W_v x, o_t = softmax_{i<=t}(q . k_i / sqrt(d)) v,
    carried as a running (max, weighted value sum, softmax sum); y = W_o concat_heads(o)."""

    heads: int = Field(default=4, gt=0)
    mode: ScanMode = Field(default="auto", description="auto | sequential | associative")


class SparseAttentionParams(Params):
    """Top-k block retrieval + block-sparse causal attention (landmark / HiP / DHSA
    style): keys are cut into blocks of `block` tokens, each summarised by its mean key;
    a query scores the summaries of the complete blocks before its own, keeps the
    `topk` best, and attends over their tokens, its own block (causally) and an optional
    sliding `window` of recent tokens. `levels: 2` makes the selection hierarchical
    (HiP / DHSA): super-blocks of `fanout` blocks, scored by their mean keys, are kept
    `super_topk` at a time, and only the blocks inside the kept super-blocks (and the
    query's own, partial super-block) compete for the `topk` block slots."""

    heads: int = Field(default=4, gt=0)
    kv_heads: int | None = Field(default=None, gt=0, description="grouped-query heads")
    block: int = Field(default=16, gt=0, description="tokens per block")
    topk: int = Field(default=2, gt=0, description="past blocks each query retrieves")
    window: int | None = Field(default=None, gt=0, description="extra sliding window")
    levels: Literal[1, 2] = Field(default=1, description="1: flat top-k; 2: super-blocks first")
    fanout: int | None = Field(default=None, gt=1, description="blocks per super-block (levels 2)")
    super_topk: int | None = Field(
        default=None, gt=0, description="super-blocks each query keeps (levels 2)"
    )
    pos: Literal["none", "rope"] = "none"
    rope_base: float = Field(default=10000.0, gt=0)
    bias: bool = False


class SelectParams(Params):
    """A layer-path program (CoLa): the body is a pool of layers; `program` lists pool
    indices in execution order. A repeated index reuses that layer's weights; an index
    left out skips its layer. `programs` instead gives several paths, one per sample:
    sample b runs programs[choice[b]], where the choice is set on the module at run time
    (default 0), or drawn per sample in training with `sample: random`."""

    program: tuple[int, ...] | None = Field(
        default=None, min_length=1, description="pool indices, e.g. [0, 1, 1]"
    )
    programs: tuple[tuple[int, ...], ...] | None = Field(
        default=None, min_length=1, description="per-sample alternatives: [[0, 1], [0, 0, 1]]"
    )
    sample: Literal["fixed", "random"] = Field(
        default="fixed", description="programs only: random draws one per sample in training"
    )

    @model_validator(mode="after")
    def _one_form(self) -> SelectParams:
        if (self.program is None) == (self.programs is None):
            raise ValueError("select needs exactly one of 'program' or 'programs'")
        if self.program is not None and self.sample != "fixed":
            raise ValueError("sample: random chooses among 'programs', not one 'program'")
        if any(not p for p in self.all_programs()):
            raise ValueError("a program needs at least one pool index")
        if any(i < 0 for p in self.all_programs() for i in p):
            raise ValueError("program indices must be >= 0")
        return self

    def all_programs(self) -> tuple[tuple[int, ...], ...]:
        """Every program (one for `program`)."""
        return (self.program,) if self.program is not None else self.programs or ()


class NestedParams(Params):
    """A SortedNet stack of `layers` residual MLP blocks x + W2 act(W1 rmsnorm(x)) that can
    run nested sub-networks: the first round(w * hidden) hidden units of every block and
    the first d blocks. Training samples (w, d) from `widths` x `depths` per forward;
    evaluation runs `eval_width` / `eval_depth` (default: the full network)."""

    layers: int = Field(default=4, gt=0)
    hidden: int | None = Field(default=None, gt=0, description="hidden units (default 4 D)")
    act: Literal["gelu", "relu", "silu", "tanh"] = "gelu"
    widths: tuple[float, ...] = Field(default=(0.25, 0.5, 0.75, 1.0), min_length=1)
    depths: tuple[int, ...] | None = Field(
        default=None, min_length=1, description="depth prefixes (default: 1..layers)"
    )
    eval_width: float = Field(default=1.0, gt=0, le=1)
    eval_depth: int | None = Field(default=None, gt=0)


class CellParams(Params):
    """A custom recurrent cell written as expressions (archc/frontend/cell_expr.py):
    `state` entries (name: width) start at zero; each step evaluates the `let`s in
    order, then every `update` from the old state and the lets; `output` (reading the
    updated state) is what the layer emits per step."""

    state: dict[str, int] = Field(description="carried vectors and their widths")
    let: dict[str, str | int | float] = Field(default_factory=dict)
    update: dict[str, str | int | float]
    output: str | int | float
    mode: Literal["auto", "sequential", "newton"] = Field(
        default="auto", description="newton: diagonal cells only (auto: newton on CUDA)"
    )
    newton_iters: int | None = Field(default=None, gt=0)
    newton_tol: float | None = Field(default=None, gt=0)

    @field_validator("state")
    @classmethod
    def _positive_widths(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("a cell needs at least one state entry")
        for k, w in v.items():
            if w <= 0:
                raise ValueError(f"state '{k}' needs a positive width")
        return v


# loop, halt, repeat and segment's parameter models (subclasses of Params above).
from archc.frontend.components_control import (  # noqa: E402
    HaltParams,
    LoopParams,
    RepeatParams,
    SegmentParams,
)


@dataclass(frozen=True)
class ComponentDef:
    """A spec component: its parameter model, shorthand parameter, and body rule."""

    name: str
    params: type[Params]
    primary: str | None = None
    body: bool = False
    doc: str = ""
    body_alias: str | None = None  # another key that may hold the body (hier: inner)


_REGISTRY: dict[str, ComponentDef] = {}


def register_component(defn: ComponentDef, *, replace: bool = False) -> None:
    """Make a component nameable in specs (the extension API)."""
    if defn.name in _REGISTRY and not replace:
        raise ValueError(f"component {defn.name!r} is already registered")
    if defn.primary is not None and defn.primary not in defn.params.model_fields:
        raise ValueError(f"primary parameter {defn.primary!r} is not a field of {defn.params}")
    _REGISTRY[defn.name] = defn


def get_component(name: str) -> ComponentDef | None:
    return _REGISTRY.get(name)


def component_names() -> list[str]:
    return sorted(_REGISTRY)


def primary_param(name: str) -> str | None:
    """The parameter a positional/scalar shorthand fills for component `name`."""
    c = _REGISTRY.get(name)
    return c.primary if c else None


for _c in (
    ComponentDef("embed", EmbedParams, "dim", doc="token embedding (B, T) -> (B, T, D)"),
    ComponentDef("posenc", PosencParams, "kind", doc="add learned/sinusoidal positions"),
    ComponentDef("linear", LinearParams, "out", doc="affine map (B, T, D) -> (B, T, out)"),
    ComponentDef("norm", NormParams, "kind", doc="RMS or layer normalisation"),
    ComponentDef("act", ActParams, "fn", doc="elementwise activation"),
    ComponentDef("dropout", DropoutParams, "p", doc="dropout (training only)"),
    ComponentDef("residual", BodyParams, None, body=True, doc="x + body(x)"),
    ComponentDef("seq", BodyParams, None, body=True, doc="the body in order"),
    ComponentDef("mlp", MlpParams, "mult", doc="two-layer or gated MLP"),
    ComponentDef("conv1d", Conv1dParams, "kernel", doc="causal/dilated/depthwise conv"),
    ComponentDef("gate", GateParams, "hidden", body=True, doc="act(W_u x) * body(W_v x)"),
    ComponentDef("attention", AttentionParams, "heads", doc="multi-head attention via SDPA"),
    ComponentDef("head", HeadParams, None, doc="output projection to the vocabulary"),
    ComponentDef("lstm", LstmParams, "hidden", doc="LSTM: full (nn.LSTM) or diagonal (newton)"),
    ComponentDef("gru", GruParams, "hidden", doc="GRU: full (nn.GRU) or diagonal (newton)"),
    ComponentDef("rnn", RnnParams, "hidden", doc="Elman RNN: tanh, relu or leaky (tau)"),
    ComponentDef("mingru", MinRnnParams, "hidden", doc="minGRU: h = (1-z) h + z W_h x"),
    ComponentDef("minlstm", MinRnnParams, "hidden", doc="minLSTM with normalised f/i gates"),
    ComponentDef("ssm", SsmParams, "hidden", doc="diagonal SSM: s4d | lru | selective"),
    ComponentDef("gla", GlaParams, "heads", doc="gated linear attention (matrix state)"),
    ComponentDef("plstm", PlstmParams, "heads", doc="pLSTM, 1-D (source/transition/mark)"),
    ComponentDef("delta", DeltaParams, "heads", doc="DeltaNet delta-rule layer (matrix state)"),
    ComponentDef("aaren", AarenParams, "heads", doc="Aaren: attention as an RNN (learned query)"),
    ComponentDef("cell", CellParams, None, doc="custom recurrent cell from expressions"),
    ComponentDef(
        "sparse_attention", SparseAttentionParams, "heads", doc="top-k block-sparse attention"
    ),
    ComponentDef("select", SelectParams, None, body=True, doc="layer-path program over a pool"),
    ComponentDef("nested", NestedParams, "layers", doc="SortedNet nested width/depth MLPs"),
    ComponentDef("loop", LoopParams, "steps", body=True, doc="looped (weight-tied) layers"),
    ComponentDef("halt", HaltParams, "max_steps", body=True, doc="adaptive depth (ACT)"),
    ComponentDef("repeat", RepeatParams, "n", body=True, doc="n untied copies of the body"),
    ComponentDef("segment", SegmentParams, "length", body=True, doc="segment recurrence"),
):
    register_component(_c)

# hier's parameter models live in components_hier.py (they subclass Params above).
from archc.frontend.components_hier import HierParams  # noqa: E402

register_component(
    ComponentDef(
        "hier", HierParams, "down", body=True, doc="multi-timescale hierarchy", body_alias="inner"
    )
)

# Neural memory and Titans compositions: components_memory.py (subclasses of Params).
from archc.frontend.components_memory import MemoryParams, TitansParams  # noqa: E402

register_component(ComponentDef("memory", MemoryParams, "store", doc="mlp | matrix | tokens"))
register_component(ComponentDef("titans", TitansParams, "variant", doc="Titans: mac|mag|mal"))

# Prefix-conditioned components: components_prefix.py (subclasses of Params).
from archc.frontend.components_prefix import LinearAttentionParams, Seq2SeqParams  # noqa: E402

register_component(
    ComponentDef("seq2seq", Seq2SeqParams, "source", doc="LSTM encoder-decoder over one stream")
)
register_component(
    ComponentDef(
        "linear_attention", LinearAttentionParams, "heads", doc="linear attention (+ JRT prefix)"
    )
)
