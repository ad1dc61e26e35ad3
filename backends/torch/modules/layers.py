"""Modules and functions the torch lowering uses.

Every definition here depends on `math`, `torch`, `torch.nn as nn` and
`torch.nn.functional as F` alone, because the standalone emitter copies their source
verbatim into the generated model.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.heads import repeat_kv, split_heads


class CausalConv1d(nn.Module):
    """1-d convolution over time on (B, T, D) inputs; causal pads only the past."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        kernel: int,
        dilation: int = 1,
        groups: int = 1,
        causal: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in // groups, kernel))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        self.dilation, self.groups, self.causal = dilation, groups, causal
        self.reach = dilation * (kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, D_out)."""
        left = self.reach if self.causal else self.reach // 2
        h = F.pad(x.transpose(1, 2), (left, self.reach - left))
        y = F.conv1d(h, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
        return y.transpose(1, 2)

    def step(self, x: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal conv of a chunk x (B, T, D_in) that follows `past` (B, reach, D_in), the
        last inputs before it (None: the sequence starts here, zeros as in forward).
        Returns (B, T, D_out) and the last `reach` inputs to carry on."""
        if past is None:
            past = x.new_zeros(x.shape[0], self.reach, x.shape[2])
        h = torch.cat([past, x], dim=1)
        y = F.conv1d(
            h.transpose(1, 2), self.weight, self.bias, dilation=self.dilation, groups=self.groups
        )
        return y.transpose(1, 2), h[:, h.shape[1] - self.reach :]


def position_rows(table: torch.Tensor, pos: int, t: int) -> torch.Tensor:
    """Rows pos..pos+t-1 of a (max_len, D) position table; past its end is an error."""
    if pos + t > table.shape[0]:
        raise ValueError(
            f"position {pos + t} exceeds posenc max_len {table.shape[0]} "
            f"(sequence of {t} tokens at offset {pos})"
        )
    return table[pos : pos + t]


class LearnedPositions(nn.Module):
    """Adds a learned (max_len, D) table of position vectors to (B, T, D)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))

    def forward(self, x: torch.Tensor, pos: int = 0) -> torch.Tensor:
        """(B, T, D) at absolute positions pos..pos+T-1 -> (B, T, D)."""
        return x + position_rows(self.weight, pos, x.shape[1])


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine position code of "Attention Is All You Need"."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor, pos: int = 0) -> torch.Tensor:
        """(B, T, D) at absolute positions pos..pos+T-1 -> (B, T, D)."""
        return x + position_rows(self.table, pos, x.shape[1]).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half form) of (B, T, H*hd) per head."""

    def __init__(self, heads: int, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._cache: tuple[int, torch.device, torch.dtype, torch.Tensor, torch.Tensor] | None = None

    def tables(self, n: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables (>= n, hd) for positions 0, 1, ..., in x's dtype and device."""
        c = self._cache
        # Tables made under inference_mode cannot be saved for backward: rebuild them
        # when the mode differs from the cached tables'.
        stale = c is not None and c[3].is_inference() != torch.is_inference_mode_enabled()
        if c is None or stale or c[0] < n or c[1] != x.device or c[2] != x.dtype:
            # Token-by-token decoding asks for one more position per call: grow
            # geometrically so the tables are rebuilt O(log T) times, not T times.
            if c is not None and not stale and c[0] < n:
                n = max(n, 2 * c[0])
            inv = self.inv_freq.to(x.device)
            ang = torch.outer(torch.arange(n, device=x.device, dtype=inv.dtype), inv)
            ang = torch.cat([ang, ang], dim=-1)  # (n, hd)
            c = (n, x.device, x.dtype, ang.cos().to(x.dtype), ang.sin().to(x.dtype))
            self._cache = c
        return c[3], c[4]

    def forward(self, x: torch.Tensor, pos: int = 0) -> torch.Tensor:
        """(B, T, H*hd) at absolute positions pos..pos+T-1 -> (B, T, H*hd)."""
        b, t, _ = x.shape
        cos, sin = self.tables(pos + t, x)
        cos, sin = cos[pos : pos + t], sin[pos : pos + t]
        h = x.view(b, t, self.heads, self.head_dim)
        half = self.head_dim // 2
        rotated = torch.cat([-h[..., half:], h[..., :half]], dim=-1)
        out = h * cos[:, None, :] + rotated * sin[:, None, :]
        return out.reshape(b, t, self.heads * self.head_dim)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    kv_heads: int,
    causal: bool,
    window: int | None,
    dropout: float,
    training: bool,
    chunk: int | None = None,
) -> torch.Tensor:
    """Multi-head attention through SDPA: q (B, T, H*hd), k/v (B, T, KV*hd) -> (B, T, H*hd).

    With `chunk` C each query attends only inside its own non-overlapping chunk of C
    tokens (causally when `causal`): T is padded to a multiple of c = min(C, T) and SDPA
    runs on (B, H, T/c, c, hd), so the work per token is c keys, not T.
    """
    b, t, d = q.shape
    qh, kh, vh = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    kh, vh = repeat_kv(kh, vh, heads)
    p = dropout if training else 0.0
    if chunk is not None:
        c = min(chunk, t)
        pad = -t % c
        # Padding sits after the last real token, so (causal or not) no real query of
        # a chunk reads it... except non-causal queries of the last chunk: mask it there.
        # (B, H, T+pad, hd) -> (B, H * n, c, hd): every chunk a batch entry of SDPA.
        qh, kh, vh = (
            F.pad(z, (0, 0, 0, pad)).flatten(1, 2).unflatten(1, (-1, c)) for z in (qh, kh, vh)
        )
        mask = None
        if pad and not causal:
            real = torch.arange(t + pad, device=q.device).view(-1, c) < t  # (n, c)
            mask = real.repeat(heads, 1)[None, :, None, :]  # (1, H * n, 1, c)
        y = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=p, is_causal=causal and mask is None
        )
        return y.reshape(b, heads, t + pad, -1)[:, :, :t].transpose(1, 2).reshape(b, t, d)
    if window is None:
        y = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=p, is_causal=causal)
    else:
        i = torch.arange(t, device=q.device)
        dist = i[:, None] - i[None, :]
        allowed = (dist >= 0) & (dist < window) if causal else dist.abs() < window
        y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed, dropout_p=p)
    return y.transpose(1, 2).reshape(b, t, d)


def attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor] | None,
    heads: int,
    kv_heads: int,
    window: int | None,
    dropout: float,
    training: bool,
    chunk: int | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal attention of a chunk that continues a sequence, through SDPA.

    q (B, T, H*hd), k/v (B, T, KV*hd) are the chunk's projections (rope applied);
    `cache` holds the keys and values of the positions before it, each (B, KV, C, hd),
    or None at the start. Returns (B, T, H*hd) and the new cache; with a `window` only
    its last window-1 positions are kept (all that a later query can reach), so the
    cache stays a constant size. With a `chunk` C (attention inside non-overlapping
    chunks of C tokens) the cache holds the keys since the start of the current C-chunk
    (at most C - 1): it starts empty at position 0 and is cut at every chunk boundary,
    so its first entry always sits at a chunk start.
    """
    b, t, d = q.shape
    qh, kh, vh = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    if cache is not None:
        kh = torch.cat([cache[0], kh], dim=2)
        vh = torch.cat([cache[1], vh], dim=2)
    n = kh.shape[2]  # cached positions + this chunk
    if chunk is not None:
        start = n // chunk * chunk  # where the next position's chunk begins
        new_cache = (kh[:, :, start:], vh[:, :, start:])
        kh, vh = repeat_kv(kh, vh, heads)
        pos = torch.arange(n, device=q.device)
        i = pos[n - t :, None]
        mask = (pos[None, :] <= i) & (pos[None, :] // chunk == i // chunk)
        p = dropout if training else 0.0
        y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=p)
        return y.transpose(1, 2).reshape(b, t, d), new_cache
    keep = n if window is None else min(n, window - 1)
    new_cache = (kh[:, :, n - keep :], vh[:, :, n - keep :])
    kh, vh = repeat_kv(kh, vh, heads)
    p = dropout if training else 0.0
    if t == 1:
        # One query sees every cached key (a windowed cache holds only reachable ones).
        y = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=p)
    elif n == t and window is None:
        y = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=p, is_causal=True)
    else:
        # Query i sits at n - t + i in the key frame: it sees keys j <= n - t + i, and
        # with a window only those less than `window` positions back.
        i = torch.arange(n - t, n, device=q.device)[:, None]
        dist = i - torch.arange(n, device=q.device)[None, :]
        mask = (dist >= 0) if window is None else (dist >= 0) & (dist < window)
        y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=p)
    return y.transpose(1, 2).reshape(b, t, d), new_cache


def open_state(
    state: dict[str, object] | None,
    keys: frozenset[str],
    initial: frozenset[str],
    blocker: str,
) -> tuple[int, dict[str, object]]:
    """Check a state passed to forward; returns (position offset, state entries).

    A state returned by `forward(..., return_state=True)` has '_pos' and continues its
    sequence. A dict without '_pos' starts a new sequence and may only set initial
    carries of recurrent layers (`initial`). `blocker` is why this model cannot
    continue a sequence ('' if it can).
    """
    if state is None:
        return 0, {}
    unknown = set(state) - keys - {"_pos"}
    if unknown:
        raise ValueError(f"state entries {sorted(unknown)} do not belong to this model")
    if "_pos" not in state:
        carried = sorted(set(state) - initial)
        if carried:
            raise ValueError(
                f"state entries {carried} need the state's '_pos': pass a state "
                "returned by forward(..., return_state=True)"
            )
        return 0, state
    if blocker:
        raise ValueError(f"this model cannot continue from a state: {blocker}")
    pos = state["_pos"]
    if not isinstance(pos, int):
        raise ValueError(f"state['_pos'] must be an int, got {type(pos).__name__}")
    return pos, state


def place(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Register `module` at dotted `path` under `root`, creating plain containers."""
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], module)
    return module


def init_parameters(root: nn.Module, table: dict[str, str], seed: int | None = None) -> None:
    """Initialise parameters by name from a closed list of initializers (never eval'd):

    "normal(std)", "uniform(bound)", "zeros", "ones"; for recurrences:
    "log_uniform(a,b)" exp(U(ln a, ln b)); "log_log_uniform(a,b)" U(ln a, ln b) (a log
    step size); "inv_softplus_log_uniform(a,b)" softplus^-1 of log_uniform(a,b);
    "s4d_real" ln(n + 1) along the last dim (S4D-Real A = -(n + 1)); "lru_nu(rmin,rmax)"
    ln(-ln r) with |lambda| = r uniform on the ring rmin..rmax; "lru_theta(max_phase)"
    ln(U(0, max_phase)).
    """
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
    params = dict(root.named_parameters())
    with torch.no_grad():
        for name, how in table.items():
            p = params[name]
            kind, _, arg = how.partition("(")
            args = [float(a) for a in arg.rstrip(")").split(",")] if arg else [0.0]
            val = args[0]
            cpu = torch.empty(p.shape, dtype=torch.float32)
            if kind == "normal":
                cpu.normal_(0.0, val, generator=gen)
            elif kind == "uniform":
                cpu.uniform_(-val, val, generator=gen)
            elif kind == "zeros":
                cpu.zero_()
            elif kind == "ones":
                cpu.fill_(1.0)
            elif kind in ("log_uniform", "log_log_uniform", "inv_softplus_log_uniform"):
                cpu.uniform_(math.log(args[0]), math.log(args[1]), generator=gen)
                if kind != "log_log_uniform":
                    cpu.exp_()
                if kind == "inv_softplus_log_uniform":
                    cpu = cpu + torch.log(-torch.expm1(-cpu))  # softplus^-1(y) = y + ln(1 - e^-y)
            elif kind == "s4d_real":
                cpu.copy_(torch.log(torch.arange(1, p.shape[-1] + 1, dtype=torch.float32)))
            elif kind == "lru_nu":
                u = torch.rand(p.shape, generator=gen)
                r2 = u * (args[1] ** 2 - args[0] ** 2) + args[0] ** 2
                cpu.copy_(torch.log(-0.5 * torch.log(r2)))
            elif kind == "lru_theta":
                cpu.copy_(torch.log(val * torch.rand(p.shape, generator=gen).clamp_min(1e-4)))
            else:
                raise ValueError(f"unknown initializer {how!r} for {name}")
            p.copy_(cpu.to(p.dtype))


class Bias(nn.Module):
    """A lone bias vector (for a linear whose weight is tied to an embedding)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))


# The recurrent cells live in cells.py; the lowering reaches them as L.<name> like the
# rest, and the standalone emitter copies their source the same way.
from archc.backends.torch.modules.bidirectional import (  # noqa: E402, F401
    Bidirectional,
    reverse_within,
)
from archc.backends.torch.modules.cells import (  # noqa: E402, F401
    GLA,
    LRU,
    S4D,
    DeltaNet,
    DiagGRU,
    LeakyRNN,
    MinGRU,
    MinLSTM,
    SelectiveSSM,
    _heads,
    diag_scan,
    matrix_scan,
    newton_solver,
    over_time,
    rnn_forward,
    step_mask,
    valid_steps,
    zero_past,
)
from archc.backends.torch.modules.cells_aaren import Aaren  # noqa: E402, F401
from archc.backends.torch.modules.cells_custom import CustomCell  # noqa: E402, F401
from archc.backends.torch.modules.cells_diag_lstm import DiagLSTM  # noqa: E402, F401
from archc.backends.torch.modules.cells_newton import (  # noqa: E402, F401
    StructuredRNN,
)
from archc.backends.torch.modules.cells_plstm import PLSTM  # noqa: E402, F401
from archc.backends.torch.modules.fused import (  # noqa: E402, F401  (archc's RNN kernels)
    FusedGRU,
    FusedLSTM,
    KernelHook,
    _fused_rnn_refusal,
    fused_leaky_rnn,
    fused_rnn,
    fused_rnn_layers,
)
from archc.backends.torch.modules.hier import (  # noqa: E402, F401  (hier: H-Net, HAT, tiers)
    Hier,
    boundary_probs,
    ema_smooth,
    split_starts,
)
from archc.backends.torch.modules.loops import (  # noqa: E402, F401  (loop / halt)
    Halt,
    LoopExtras,
    LoraAdapter,
    loop_steps,
)
from archc.backends.torch.modules.memory import (  # noqa: E402, F401  (Titans, ATLAS)
    NeuralMemory,
    TitansMAC,
    _decay_matrix,
    _silu_grad,
    memory_apply,
    memory_chunk,
    memory_scan,
    window_band,
)
from archc.backends.torch.modules.pointwise_hook import PointwiseHook  # noqa: E402, F401
from archc.backends.torch.modules.prefix import (  # noqa: E402, F401  (seq2seq, JRT prefix)
    Seq2SeqLSTM,
    feature_map,
    prefix_linear_attention,
)
from archc.backends.torch.modules.ragged import (  # noqa: E402, F401  (ragged sequences)
    chunk_of,
    pack,
    padded_to_ragged,
    ragged_to_padded,
    select_padded,
    unpack,
)
from archc.backends.torch.modules.segment import (  # noqa: E402, F401  (segment recurrence)
    SegmentRecurrence,
    detach_carry,
    window_kv,
)
from archc.backends.torch.modules.select import (  # noqa: E402, F401  (SortedNet, CoLa)
    NestedMLP,
    PathChoice,
)
from archc.backends.torch.modules.sparse_attention import (  # noqa: E402, F401  (top-k blocks)
    _sparse_attention_gather,
    _sparse_attention_keys,
    _super_allowed,
    block_sparse_attention,
    block_sparse_attention_step,
)
from archc.backends.torch.modules.upscale import DepthUpscale  # noqa: E402, F401  (SOLAR)
