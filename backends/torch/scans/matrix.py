"""Matrix-state recurrences in pure torch: gated linear attention (GLA) and the delta rule.

Shapes: q, k (B, H, T, dk); v (B, H, T, dv); the state S is (B, H, dk, dv) and a token's
key/query are row vectors, so ``k_t^T v_t`` is an outer product (dk, dv) and ``q_t S_t``
a (dv,) row.

- GLA (Yang et al. 2023), per-key-dimension decay g_t = exp(log_g_t) in (0, 1]^dk:
  ``S_t = diag(g_t) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``. ``log_g = None`` is plain
  linear attention (g = 1).
- Delta rule (DeltaNet; Schlag et al. 2021, chunked "WY" form of Yang et al. 2024):
  ``S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t = S_{t-1} + beta_t k_t^T
  (v_t - k_t S_{t-1})``, ``o_t = q_t S_t``. With S stored (dk, dv) this is the DeltaNet
  update ``S (I - beta k k^T) + beta v k^T`` of the (dv, dk) state, transposed.

Modes (all differentiable wrt every input, S0 included):

- ``"sequential"``: one step at a time; the reference, and the streaming/decoding path.
- ``"chunked"``: T is cut into chunks of ``chunk`` steps. Inside a chunk everything is
  matmuls; across chunks only the (dk, dv) state is carried (T / chunk Python steps).
  On CUDA, the Triton kernels (backends/triton/gla_scan, backends/triton/delta_scan;
  forward and backward, their own chunk length) run instead when their ``can_lower``
  accepts the inputs; a refusal is logged once with its reason, then torch runs.
- ``"auto"``: the Triton kernel on CUDA as for "chunked"; otherwise sequential for
  T <= SHORT_T (the select-scan-mode pass's threshold) and chunked beyond.

The Triton kernels' backward is a kernel of its own (not autograd through ops), so
double backward needs the torch modes.

GLA chunked, overflow-safe. With ``b_t`` the within-chunk cumulative log decay (b_t <= 0,
non-increasing), the intra-chunk score is ``A[t, s] = sum_d q_td k_sd exp(b_td - b_sd)``
for s <= t. The common factorisation ``(q exp(b)) (k exp(-b))^T`` overflows as soon as
a chunk's decay passes exp(-88) (g ~ 1e-4 does that in 10 steps). Instead the chunk is
cut into sub-chunks of 16 steps: a block (query sub-chunk i, key sub-chunk j < i) uses
the reference point r_i = b at the end of sub-chunk i-1, so both factors
``q exp(b_t - r_i)`` and ``k exp(r_i - b_s)`` have exponents <= 0; a diagonal block forms
``exp(b_t - b_s)`` (masked to s <= t before the exp) directly. The carried state uses
``exp(b_last - b_s) <= 1`` likewise. No exp ever sees a positive argument, so nothing
overflows; tiny decays underflow to 0, which is their true value to fp32 precision.

Delta chunked (WY form): with the chunk's start state S, the pseudo-values
``U = diag(beta) (V - K S_prev)`` satisfy ``(I + A) U = diag(beta) (V - K S)`` where
``A[s, r] = beta_s (k_s . k_r)`` for r < s. Solving once per chunk (unit lower
triangular) gives ``U~ = (I+A)^-1 diag(beta) V`` and ``W = (I+A)^-1 diag(beta) K``, so
``U = U~ - W S``, ``O = Q S + tril(Q K^T) U`` and ``S' = S + K^T U``.

Compute dtype: float32, or float64 when any input is float64. Outputs are returned in
v's dtype; the final state in the compute dtype (it is the carry: keep it precise).
``log_g`` must be finite (clamp a gate's log, e.g. at -40, in the caller).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.passes.select_scan_mode import SHORT_T

__all__ = ["delta_scan", "gla_scan", "matrix_scan_modes"]

_MODES = ("auto", "sequential", "chunked")

# Sub-chunk of the GLA intra-chunk term: the diagonal blocks cost (C * SUB * dk) each.
_SUB = 16


def matrix_scan_modes() -> tuple[str, ...]:
    """The accepted ``mode`` values of :func:`gla_scan` and :func:`delta_scan`."""
    return _MODES


def _work_dtype(*xs: Tensor | None) -> torch.dtype:
    work = torch.float32
    for x in xs:
        if x is not None:
            work = torch.promote_types(work, x.dtype)
    return work


def _check(
    name: str, q: Tensor, k: Tensor, v: Tensor, S0: Tensor | None, mode: str, chunk: int
) -> None:
    if mode not in _MODES:
        raise ValueError(f"{name}: unknown mode {mode!r}; expected one of {_MODES}")
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"{name}: q {tuple(q.shape)} and k {tuple(k.shape)} must both be (B, H, T, dk)"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{name}: v {tuple(v.shape)} is not (B, H, T, dv) matching q")
    B, H, _, dk = q.shape
    if S0 is not None and S0.shape != (B, H, dk, v.shape[-1]):
        raise ValueError(
            f"{name}: S0 {tuple(S0.shape)} is not (B, H, dk, dv) = {(B, H, dk, v.shape[-1])}"
        )
    if chunk < 1:
        raise ValueError(f"{name}: chunk must be >= 1, got {chunk}")


def _try_triton(
    kind: str, q: Tensor, k: Tensor, v: Tensor, w: Tensor | None, S0: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """The Triton kernel of ``kind`` ("gla" | "delta") on the original dtypes (it
    accumulates in float32 itself), or None after logging (once) why it does not apply."""
    # Imported lazily: triton is optional, and absent on CPU-only installs.
    from archc.backends.triton.fallback import log_fallback

    try:
        if kind == "gla":
            from archc.backends.triton.gla_scan.op import gla_chunked as fn
            from archc.backends.triton.gla_scan.op import use_kernel
        else:
            from archc.backends.triton.delta_scan.op import delta_chunked as fn
            from archc.backends.triton.delta_scan.op import use_kernel
    except ImportError as err:
        log_fallback(f"{kind}_scan", f"triton unavailable: {err}")
        return None
    B, H, T, dk = q.shape
    dtypes = [x.dtype for x in (q, k, v, w, S0) if x is not None]
    if not use_kernel(q.device, dtypes, (B, H, T, dk, v.shape[-1])):
        return None
    return fn(q, k, v, w, S0)


def _resolve_mode(mode: str, T: int) -> str:
    """ "auto" off the kernel path: the loop for short sequences, chunked beyond."""
    if mode == "auto":
        return "sequential" if T <= SHORT_T else "chunked"
    return mode


def _pad_time(x: Tensor, pad: int) -> Tensor:
    """Zero-pad dim 2 (T) of a (B, H, T, ...) tensor at the end."""
    if pad == 0:
        return x
    if x.dim() == 3:
        return F.pad(x, (0, pad))
    return F.pad(x, (0, 0, 0, pad))


def _run(
    kind: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w: Tensor | None,
    S0: Tensor | None,
    mode: str,
    chunk: int,
    kernel: bool,
) -> tuple[Tensor, Tensor]:
    """The shared body of gla_scan / delta_scan (inputs already checked): the Triton
    kernel on CUDA when it applies, else the torch sequential or chunked form in the
    compute dtype. `w` is GLA's log decays (None: no decay) or the delta rule's beta."""
    if kernel and mode != "sequential" and q.is_cuda and q.shape[2] > 0:
        out = _try_triton(kind, q, k, v, w, S0)
        if out is not None:
            return out
    mode = _resolve_mode(mode, q.shape[2])
    work = _work_dtype(q, k, v, w, S0)
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    qf, kf, vf = q.to(work), k.to(work), v.to(work)
    wf = torch.zeros_like(qf) if w is None else w.to(work)
    S = qf.new_zeros(B, H, dk, dv) if S0 is None else S0.to(work)
    if T == 0:
        return v.new_empty(B, H, 0, dv), S
    if kind == "gla":
        run = _gla_sequential if mode == "sequential" else partial(_gla_chunked, chunk=chunk)
    else:
        run = _delta_sequential if mode == "sequential" else partial(_delta_chunked, chunk=chunk)
    o, S = run(qf, kf, vf, wf, S)
    return o.to(v.dtype), S


# --------------------------------------------------------------------------- GLA


def gla_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_g: Tensor | None,
    S0: Tensor | None = None,
    *,
    mode: str = "chunked",
    chunk: int = 64,
    kernel: bool = True,
) -> tuple[Tensor, Tensor]:
    """Gated linear attention ``S_t = diag(exp(log_g_t)) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``.

    Args:
        q, k: (B, H, T, dk).
        v: (B, H, T, dv).
        log_g: (B, H, T, dk) log decays (<= 0, finite), or None for plain linear attention.
        S0: initial state (B, H, dk, dv), or None for zeros.
        mode: "auto" | "sequential" | "chunked" (see the module docstring).
        chunk: chunk length of the torch chunked mode.
        kernel: False keeps "auto"/"chunked" on the torch path even on CUDA (the
            reference the kernel is tested and benchmarked against).

    Returns:
        (o, S_T): o (B, H, T, dv) in v's dtype, S_T (B, H, dk, dv) in the compute dtype.
    """
    _check("gla_scan", q, k, v, S0, mode, chunk)
    if log_g is not None and log_g.shape != q.shape:
        raise ValueError(f"gla_scan: log_g {tuple(log_g.shape)} is not q's {tuple(q.shape)}")
    return _run("gla", q, k, v, log_g, S0, mode, chunk, kernel)


def _gla_sequential(
    q: Tensor, k: Tensor, v: Tensor, lg: Tensor, S: Tensor
) -> tuple[Tensor, Tensor]:
    outs = []
    # unbind (not indexing) keeps the backward O(T) instead of O(T^2) zero-filled grads.
    for q_t, k_t, v_t, lg_t in zip(
        q.unbind(2), k.unbind(2), v.unbind(2), lg.unbind(2), strict=True
    ):
        S = lg_t.exp().unsqueeze(-1) * S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 2), S


def _gla_chunked(
    q: Tensor, k: Tensor, v: Tensor, lg: Tensor, S: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    c = _SUB if chunk % _SUB == 0 else chunk  # sub-chunk length
    C = min(chunk, -(-T // c) * c)  # a short sequence does not pay for a whole chunk
    N = -(-T // C)
    n = C // c
    pad = N * C - T
    # Padding steps have k = v = 0 and log_g = 0: they leave the state unchanged.
    q, k, v, lg = (_pad_time(x, pad) for x in (q, k, v, lg))
    qc = q.reshape(B, H, N, C, dk)
    kc = k.reshape(B, H, N, C, dk)
    vc = v.reshape(B, H, N, C, dv)
    b = lg.reshape(B, H, N, C, dk).cumsum(3)  # within-chunk cumulative log decay, <= 0

    # ---- intra-chunk scores A (B, H, N, C, C), built per sub-chunk block.
    qs = qc.reshape(B, H, N, n, c, dk)
    ks = kc.reshape(B, H, N, n, c, dk)
    bs = b.reshape(B, H, N, n, c, dk)
    # Diagonal blocks: exp(b_t - b_s) for s < t, masked *before* the exp so it never
    # sees a positive argument (the masked entries would overflow and poison grads).
    # s = t has no decay and is added as q_t . k_t: forming exp(b_t - b_t) instead would
    # put two O(1) gradients of opposite sign on b_t, whose rounding swamps the true
    # (tiny) d log_g when g is small.
    tri = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    diff = bs.unsqueeze(-2) - bs.unsqueeze(-3)  # (B, H, N, n, t, s, dk)
    decay = diff.masked_fill(~tri[:, :, None], float("-inf")).exp()
    A_diag = (qs.unsqueeze(-2) * ks.unsqueeze(-3) * decay).sum(-1)
    A_diag = A_diag + torch.diag_embed((qs * ks).sum(-1))
    # Place block i on the block diagonal: (B, H, N, i, t, s) -> (B, H, N, i, t, j, s).
    A = torch.diag_embed(A_diag.permute(0, 1, 2, 4, 5, 3), dim1=3, dim2=5)
    if n > 1:
        # Off-diagonal blocks (i > j): reference r_i = b at the end of sub-chunk i-1.
        ref = torch.cat([bs.new_zeros(B, H, N, 1, dk), bs[:, :, :, :-1, -1]], dim=3)
        q_ref = qs * (bs - ref.unsqueeze(-2)).exp()  # exponent <= 0
        lower = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-1)  # j < i
        expo = ref[:, :, :, :, None, None, :] - bs[:, :, :, None, :, :, :]  # (.., i, j, s, dk)
        expo = expo.masked_fill(~lower[:, :, None, None], float("-inf"))
        k_ref = ks.unsqueeze(3) * expo.exp()  # (B, H, N, i, j, s, dk), exponent <= 0
        A = A + torch.einsum("bhnitd,bhnijsd->bhnitjs", q_ref, k_ref)
    A = A.reshape(B, H, N, C, C)
    o = A @ vc  # intra-chunk part

    # ---- inter-chunk: carry the state across chunk ends.
    b_last = b[:, :, :, -1]  # (B, H, N, dk): the chunk's total log decay
    q_dec = qc * b.exp()  # decay from the chunk start to t, <= 1
    # Decay from s to the chunk end, sum_{r > s} log_g_r, as an exclusive suffix sum
    # rather than b_last - b_s: at s = C-1 the difference would again cancel two O(1)
    # gradients (see the diagonal blocks above).
    lgc = lg.reshape(B, H, N, C, dk)
    after = F.pad(lgc[:, :, :, 1:], (0, 0, 0, 1)).flip(3).cumsum(3).flip(3)
    k_dec = kc * after.exp()  # <= 1
    U = k_dec.transpose(-1, -2) @ vc  # (B, H, N, dk, dv): the chunk's own contribution
    g_last = b_last.exp().unsqueeze(-1)
    inter = []
    for i in range(N):
        inter.append(q_dec[:, :, i] @ S)
        S = g_last[:, :, i] * S + U[:, :, i]
    o = o + torch.stack(inter, 2)
    return o.reshape(B, H, N * C, dv)[:, :, :T], S


# --------------------------------------------------------------------------- delta rule


def delta_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    S0: Tensor | None = None,
    *,
    mode: str = "chunked",
    chunk: int = 64,
    kernel: bool = True,
) -> tuple[Tensor, Tensor]:
    """Delta rule ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = q_t S_t``.

    Args:
        q, k: (B, H, T, dk); k is expected L2-normalised by the caller (then the
            recurrence is contractive for beta in (0, 1)).
        v: (B, H, T, dv).
        beta: (B, H, T) write strengths in (0, 1).
        S0: initial state (B, H, dk, dv), or None for zeros.
        mode: "auto" | "sequential" | "chunked" (see the module docstring).
        chunk: chunk length of the torch chunked mode.
        kernel: False keeps "auto"/"chunked" on the torch path even on CUDA (the
            reference the kernel is tested and benchmarked against).

    Returns:
        (o, S_T): o (B, H, T, dv) in v's dtype, S_T (B, H, dk, dv) in the compute dtype.
    """
    _check("delta_scan", q, k, v, S0, mode, chunk)
    if beta.shape != q.shape[:3]:
        raise ValueError(f"delta_scan: beta {tuple(beta.shape)} is not (B, H, T)")
    return _run("delta", q, k, v, beta, S0, mode, chunk, kernel)


def _delta_sequential(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor
) -> tuple[Tensor, Tensor]:
    outs = []
    for q_t, k_t, v_t, b_t in zip(
        q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2), strict=True
    ):
        err = v_t - torch.einsum("bhk,bhkv->bhv", k_t, S)  # what the memory gets wrong
        S = S + (b_t[..., None, None] * k_t.unsqueeze(-1)) * err.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 2), S


def _delta_chunked(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    C = min(chunk, T)
    N = -(-T // C)
    pad = N * C - T
    # Padding steps have k = v = 0 and beta = 0: they leave the state unchanged.
    q, k, v, beta = (_pad_time(x, pad) for x in (q, k, v, beta))
    qc = q.reshape(B, H, N, C, dk)
    kc = k.reshape(B, H, N, C, dk)
    vc = v.reshape(B, H, N, C, dv)
    bc = beta.reshape(B, H, N, C, 1)

    # (I + A) with A[s, r] = beta_s k_s.k_r (r < s); unit lower triangular.
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    A = (bc * (kc @ kc.transpose(-1, -2))).tril(-1) + eye
    rhs = torch.cat([bc * vc, bc * kc], dim=-1)  # one solve for both U~ and W
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    U_t, W = X[..., :dv], X[..., dv:]
    QK = (qc @ kc.transpose(-1, -2)).tril()  # includes s = t: o_t reads S_t

    outs = []
    for i in range(N):
        U = U_t[:, :, i] - W[:, :, i] @ S  # (B, H, C, dv) pseudo-values beta * (v - k S_prev)
        outs.append(qc[:, :, i] @ S + QK[:, :, i] @ U)
        S = S + kc[:, :, i].transpose(-1, -2) @ U
    o = torch.stack(outs, 2).reshape(B, H, N * C, dv)[:, :, :T]
    return o, S
