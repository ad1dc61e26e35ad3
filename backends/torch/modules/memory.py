"""Neural memory written at test time: Titans (Behrouz et al. 2024) and ATLAS's Omega rule.

Per head, the memory M is an MLP of depth 1 (M(k) = k W_1) or 2 (M(k) = silu(k W_1) W_2)
whose weights W are updated while the model reads the sequence:

    l_t(W)  = sum_{i = t-w+1..t} ||M_W(k_i) - v_i||^2      (w = 1: Titans; w > 1: Omega)
    S_t     = eta_t S_{t-1} - theta_t grad l_t(W)            (surprise with momentum)
    W_t     = (1 - alpha_t) W_{t-1} + S_t                     (forgetting)
    y_t     = M_{W_t}(q_t)                                    (read after token t's write)

Reading M_t after the write of token t is causal: W_t depends on tokens <= t only.

Chunked form (the paper's parallel training): within a chunk of C tokens every gradient
is taken at the chunk-start weights W_0, so the C gradients are outer products computed
at once; momentum and decay are linear recurrences with scalar coefficients, unrolled
as C x C lower-triangular matrices (kept in log space so cumulative decays never
overflow). The read M_t(q_t) is then attention-like: for a layer with input x,
    x_t W_t = a_t x_t W_0 + b_t x_t S_0 - sum_i Coef_{t,i} (x_t . x_i) d_i
where d_i is the layer's back-propagated error at token i. With C = 1 this is exactly
the per-token rule (mode "sequential" runs it so, one token at a time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _silu_grad(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def memory_apply(ws: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """M_W(x): ws [(B, H, a, b), ...] layer weights, x (B, H, N, dk) -> (B, H, N, dv)."""
    for i, w in enumerate(ws):
        x = x @ w
        if i < len(ws) - 1:
            x = F.silu(x)
    return x


def _decay_matrix(log_g: torch.Tensor) -> torch.Tensor:
    """G[t, s] = prod_{r = s+1..t} g_r for s <= t, else 0: log_g (B, H, C) -> (B, H, C, C)."""
    cum = torch.cumsum(log_g, -1)
    diff = cum[..., :, None] - cum[..., None, :]
    c = log_g.shape[-1]
    lower = torch.ones(c, c, dtype=torch.bool, device=log_g.device).tril()
    # Mask before exp: above the diagonal the difference is positive and may overflow.
    return torch.exp(torch.where(lower, diff, torch.full_like(diff, -math.inf)))


def memory_chunk(
    ws: list[torch.Tensor],
    ss: list[torch.Tensor],
    q: torch.Tensor,
    kx: torch.Tensor,
    vx: torch.Tensor,
    theta: torch.Tensor,
    log_eta: torch.Tensor,
    log_keep: torch.Tensor,
    band: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """One chunk of the chunked rule.

    ws, ss: weights and momenta at the chunk start, each (B, H, a, b); q (B, H, C, dk) the
    chunk's queries; kx (B, H, N, dk), vx (B, H, N, dv) the keys/values of the chunk
    preceded by the w - 1 tokens before it (N = C + w - 1); theta, log_eta, log_keep
    (B, H, C): learning rate, log momentum, log(1 - alpha); band (C, N): 1 where token i
    lies in token t's window (and exists). Returns (y (B, H, C, dv), W_C, S_C).
    """
    # Forward and backward of every window token at W_0: inputs xs[l] and errors ds[l]
    # of layer l; grad_l l_i = xs[l]_i^T ds[l]_i.
    xs, zs = [kx], []
    h = kx
    for i, w in enumerate(ws):
        z = h @ w
        zs.append(z)
        if i < len(ws) - 1:
            h = F.silu(z)
            xs.append(h)
    d = 2.0 * (z - vx)
    ds = [d]
    for i in range(len(ws) - 1, 0, -1):
        d = (d @ ws[i].transpose(-1, -2)) * _silu_grad(zs[i - 1])
        ds.insert(0, d)
    # Unrolled recurrences: W_t = a_t W_0 + b_t S_0 - sum_s K[t, s] theta_s u_s with
    # K = A E (A: decay products, E: momentum products), u_s = sum of window gradients.
    # The products run in fp32 at least (cumulative sums of bf16 logs drift).
    ft = torch.promote_types(q.dtype, torch.float32)
    log_keep, log_eta, theta, band = (t.to(ft) for t in (log_keep, log_eta, theta, band))
    A = _decay_matrix(log_keep)
    E = _decay_matrix(log_eta)
    a = torch.exp(torch.cumsum(log_keep, -1))  # (B, H, C)
    e0 = torch.exp(torch.cumsum(log_eta, -1))
    b = (A @ e0[..., None])[..., 0]
    coef = ((A @ E) * theta[..., None, :]) @ band  # (B, H, C, N)
    coef_s = (E[..., -1, :] * theta) @ band  # (B, H, N): the momentum's last row
    a, b, e0, coef, coef_s = (t.to(q.dtype) for t in (a, b, e0, coef, coef_s))
    # Read: every layer's pre-activation at the token's own W_t.
    hq = q
    for i, (w, s) in enumerate(zip(ws, ss, strict=True)):
        zq = a[..., None] * (hq @ w) + b[..., None] * (hq @ s)
        zq = zq - ((hq @ xs[i].transpose(-1, -2)) * coef) @ ds[i]
        hq = F.silu(zq) if i < len(ws) - 1 else zq
    # State at the chunk end.
    new_w, new_s = [], []
    for w, s, x, d in zip(ws, ss, xs, ds, strict=True):
        upd_w = x.transpose(-1, -2) @ (coef[..., -1, :, None] * d)
        upd_s = x.transpose(-1, -2) @ (coef_s[..., None] * d)
        new_w.append(a[..., -1, None, None] * w + b[..., -1, None, None] * s - upd_w)
        new_s.append(e0[..., -1, None, None] * s - upd_s)
    return hq, new_w, new_s


def window_band(c: int, window: int, start: int, device: torch.device) -> torch.Tensor:
    """(C, C + w - 1): band[t, i] = 1 when extended index i (token start - (w-1) + i) lies
    in token t's window t-w+1..t and is not before the sequence start."""
    t = torch.arange(c, device=device)[:, None]
    i = torch.arange(c + window - 1, device=device)[None, :]
    ok = (i >= t) & (i <= t + window - 1) & (i - (window - 1) + start >= 0)
    return ok.to(torch.get_default_dtype())


def memory_scan(
    ws0: list[torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    theta: torch.Tensor,
    log_eta: torch.Tensor,
    log_keep: torch.Tensor,
    chunk: int,
    window: int = 1,
    ss0: list[torch.Tensor] | None = None,
    offset: int = 0,
    context: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Write and read a sequence chunk by chunk (chunk = 1: the per-token loop).

    ws0, ss0: weights and momenta [(B, H, a, b), ...] (momenta default to zero); q
    (B, H, T, dk); k (B, H, T', dk), v (B, H, T', dv) with T' = T, or T + window - 1
    when `context` (the keys/values of the window - 1 tokens before q's first);
    theta, log_eta, log_keep (B, H, T); offset: the position of q's first token in the
    sequence (chunks start at multiples of `chunk` from it). Returns (y (B, H, T, dv),
    final weights, final momenta)."""
    t_len = q.shape[2]
    pad = window - 1
    kp = k if context else F.pad(k, (0, 0, pad, 0))
    vp = v if context else F.pad(v, (0, 0, pad, 0))
    ws = list(ws0)
    ss = list(ss0) if ss0 is not None else [torch.zeros_like(w) for w in ws0]
    ys = []
    for start in range(0, t_len, chunk):
        end = min(start + chunk, t_len)
        band = window_band(end - start, window, offset + start, q.device).to(q.dtype)
        y, ws, ss = memory_chunk(
            ws,
            ss,
            q[:, :, start:end],
            kp[:, :, start : end + pad],
            vp[:, :, start : end + pad],
            theta[..., start:end],
            log_eta[..., start:end],
            log_keep[..., start:end],
            band,
        )
        ys.append(y)
    return torch.cat(ys, 2), ws, ss


class NeuralMemory(nn.Module):
    """Titans' long-term memory as a layer (B, T, D) -> (B, T, D), `heads` heads of width
    dk = D / heads, each with its own MLP memory (hidden width mult * dk for depth 2):

    q, k, v = L2-normalised (per head) W_q x, W_k x, W_v x (unit targets keep the
    inner loop bounded); [theta, eta, alpha] =
    [lr * sigmoid(g_0), sigmoid(g_1), sigmoid(g_2 - 4)] with g = W_g x + b_g (the -4 keeps
    forgetting weak at initialisation); y = W_o concat_heads(M_t(q_t)).
    The memory's initial weights w0_l (H, a, b) are learned by the outer loop.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        depth: int = 2,
        mult: float = 2.0,
        chunk: int = 16,
        window: int = 1,
        lr: float = 0.01,
        mode: str = "chunked",
    ) -> None:
        super().__init__()
        dk = dim // heads
        dh = max(1, round(mult * dk))
        self.weight_q = nn.Parameter(torch.empty(dim, dim))
        self.weight_k = nn.Parameter(torch.empty(dim, dim))
        self.weight_v = nn.Parameter(torch.empty(dim, dim))
        self.weight_g = nn.Parameter(torch.empty(3 * heads, dim))
        self.bias_g = nn.Parameter(torch.empty(3 * heads))
        shapes = [(dk, dk)] if depth == 1 else [(dk, dh), (dh, dk)]
        self.w0 = nn.ParameterList([nn.Parameter(torch.empty(heads, *s)) for s in shapes])
        self.weight_o = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.chunk, self.window, self.lr, self.mode = heads, chunk, window, lr, mode

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def project(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> q, k, v (B, H, T, dk) and theta, log_eta, log_keep (B, H, T)."""
        q = F.normalize(self._heads(F.linear(x, self.weight_q)), dim=-1)
        k = F.normalize(self._heads(F.linear(x, self.weight_k)), dim=-1)
        v = F.normalize(self._heads(F.linear(x, self.weight_v)), dim=-1)
        g = F.linear(x, self.weight_g, self.bias_g).transpose(1, 2)  # (B, 3H, T)
        g_lr, g_eta, g_alpha = g.split(self.heads, dim=1)
        theta = self.lr * torch.sigmoid(g_lr)
        return q, k, v, theta, F.logsigmoid(g_eta), F.logsigmoid(4.0 - g_alpha)

    def initial(self, batch: int) -> list[torch.Tensor]:
        """The learned initial memory weights, one copy per sample: [(B, H, a, b), ...]."""
        return [w.unsqueeze(0).expand(batch, *w.shape) for w in self.w0]

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, dv) -> W_o concat_heads(y) (B, T, D)."""
        return F.linear(y.transpose(1, 2).flatten(2), self.weight_o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        q, k, v, theta, log_eta, log_keep = self.project(x)
        y, _, _ = memory_scan(
            self.initial(x.shape[0]), q, k, v, theta, log_eta, log_keep, self._chunk(), self.window
        )
        return self.merge(y)

    def _chunk(self) -> int:
        return 1 if self.mode == "sequential" else self.chunk

    def step(self, x: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        """Continue a sequence: x (B, t, D) the next tokens; state None at the start, else
        (weights, momenta at the last chunk boundary, tokens seen, the raw inputs of the
        unfinished chunk, the window - 1 raw inputs before it). The unfinished chunk is
        re-run from its start, so the outputs equal forward's on the whole sequence.
        Returns (y (B, t, D), state)."""
        w, chunk = self.window, self._chunk()
        if state is None:
            ws = self.initial(x.shape[0])
            state = (
                ws,
                [torch.zeros_like(a) for a in ws],
                0,
                x[:, :0],
                x.new_zeros(x.shape[0], w - 1, x.shape[2]),
            )
        ws, ss, n, pend, ctx = state
        xx = torch.cat([pend, x], 1)
        start = n - pend.shape[1]  # a chunk boundary
        q, k, v, theta, log_eta, log_keep = self.project(torch.cat([ctx, xx], 1))
        q, theta, log_eta, log_keep = (a[:, :, w - 1 :] for a in (q, theta, log_eta, log_keep))
        full = xx.shape[1] // chunk * chunk  # tokens of the chunks this call completes
        ys = []
        for lo, hi in ((0, full), (full, xx.shape[1])):
            if hi == lo:
                continue
            y, ws2, ss2 = memory_scan(
                ws,
                q[:, :, lo:hi],
                k[:, :, lo : hi + w - 1],
                v[:, :, lo : hi + w - 1],
                theta[..., lo:hi],
                log_eta[..., lo:hi],
                log_keep[..., lo:hi],
                chunk,
                w,
                ss,
                start + lo,
                context=True,
            )
            ys.append(y)
            if hi == full:  # commit only completed chunks
                ws, ss = ws2, ss2
        seen = torch.cat([ctx, xx[:, :full]], 1)
        y = self.merge(torch.cat(ys, 2)[:, :, pend.shape[1] :])
        return y, (ws, ss, n + x.shape[1], xx[:, full:], seen[:, seen.shape[1] - (w - 1) :])


class TitansMAC(nn.Module):
    """Titans memory-as-context, segments of `chunk` tokens (B, T, D) -> (B, T, D).

    Per segment, with the memory weights W reached at the segment start:
    h = W_r concat_heads(M_W(q_r)) with q_r = L2-normalised W_rq x (retrieval);
    y = attention of the segment's tokens over [persistent tokens P, h, x] (token t sees
    P, h_<=t and x_<=t: h_j is computed from x_j, so later ones would leak the future);
    the memory then writes y (one chunk of the chunked rule) and reads o_t = M_t(q(y_t));
    out = y * sigmoid(W_o o). Segments run in order: each needs the memory the previous
    one left.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        depth: int = 2,
        mult: float = 2.0,
        chunk: int = 16,
        persist: int = 4,
        lr: float = 0.01,
    ) -> None:
        super().__init__()
        self.memory = NeuralMemory(dim, heads, depth, mult, chunk, 1, lr)
        self.weight_rq = nn.Parameter(torch.empty(dim, dim))
        self.weight_r = nn.Parameter(torch.empty(dim, dim))
        self.persist = nn.Parameter(torch.empty(persist, dim))
        self.weight_qkv = nn.Parameter(torch.empty(3 * dim, dim))
        self.weight_a = nn.Parameter(torch.empty(dim, dim))
        self.heads, self.chunk = heads, chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        ws = self.memory.initial(x.shape[0])
        return self._segments(x, ws, [torch.zeros_like(w) for w in ws])[0]

    def step(self, x: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        """Continue a sequence: x (B, t, D); state None at the start, else (weights,
        momenta at the last segment boundary, the raw inputs of the unfinished segment),
        which is re-run from its start. Returns (y (B, t, D), state)."""
        if state is None:
            ws = self.memory.initial(x.shape[0])
            state = (ws, [torch.zeros_like(w) for w in ws], x[:, :0])
        ws, ss, pend = state
        xx = torch.cat([pend, x], 1)
        full = xx.shape[1] // self.chunk * self.chunk
        y, ws, ss = self._segments(xx[:, :full], ws, ss)
        if full < xx.shape[1]:  # the unfinished segment's state is not kept
            y = torch.cat([y, self._segments(xx[:, full:], ws, ss)[0]], 1)
        return y[:, pend.shape[1] :], (ws, ss, xx[:, full:])

    def _segments(
        self, x: torch.Tensor, ws: list[torch.Tensor], ss: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run x (B, T, D), starting at a segment boundary with memory weights ws and
        momenta ss; returns (y (B, T, D), weights, momenta after the last segment)."""
        mem = self.memory
        bsz, t_len, d = x.shape
        p = self.persist.shape[0]
        outs = []
        for start in range(0, t_len, self.chunk):
            seg = x[:, start : start + self.chunk]
            c = seg.shape[1]
            qr = F.normalize(mem._heads(F.linear(seg, self.weight_rq)), dim=-1)
            h = F.linear(memory_apply(ws, qr).transpose(1, 2).flatten(2), self.weight_r)
            ctx = torch.cat([self.persist.unsqueeze(0).expand(bsz, p, d), h, seg], 1)
            qq = F.linear(seg, self.weight_qkv[:d])
            kk, vv = F.linear(ctx, self.weight_qkv[d:]).chunk(2, -1)
            i = torch.arange(c, device=x.device)
            causal = i[None, :] <= i[:, None]
            allowed = torch.cat(
                [torch.ones(c, p, dtype=torch.bool, device=x.device), causal, causal], 1
            )
            y = F.scaled_dot_product_attention(
                mem._heads(qq), mem._heads(kk), mem._heads(vv), attn_mask=allowed
            )
            y = F.linear(y.transpose(1, 2).flatten(2), self.weight_a)
            q, k, v, theta, log_eta, log_keep = mem.project(y)
            band = window_band(c, 1, 0, x.device).to(x.dtype)
            o, ws, ss = memory_chunk(ws, ss, q, k, v, theta, log_eta, log_keep, band)
            outs.append(y * torch.sigmoid(mem.merge(o)))
        if not outs:
            return x, ws, ss
        return torch.cat(outs, 1), ws, ss
