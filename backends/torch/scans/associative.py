"""A generic parallel prefix scan over any associative combine, and the Aaren scan.

``associative_scan(combine, elems)`` computes, along ``dim``, the inclusive prefixes
``e_0, e_0 (+) e_1, e_0 (+) e_1 (+) e_2, ...`` of a sequence of elements, where one
element is a tuple of tensors (one slice of each along ``dim``) and ``(+)`` is any
associative ``combine(earlier, later) -> combined``; it need not be commutative. The
algorithm is Hillis-Steele: ceil(log2 T) rounds, round r combining every position t with
position t - 2^r, so O(T log T) work in O(log T) depth. It is plain torch (narrow, cat
and the combine's own ops), so autograd differentiates it, double backward included.

Aaren (Feng et al. 2024, "Attention as an RNN") is a softmax over all past tokens for
one learned query, carried as (m, u, w): the running max score m, u = sum exp(s_i - m)
v_i and w = sum exp(s_i - m); its output is u / w. Merging two such summaries is
associative (``aaren_combine``), so ``aaren_scan`` runs it either as a step loop (mode
"sequential", the reference) or through ``associative_scan``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from archc.passes.select_scan_mode import SHORT_T

__all__ = ["aaren_combine", "aaren_scan", "aaren_scan_modes", "associative_scan"]

Elems = tuple[Tensor, ...]
Combine = Callable[[Elems, Elems], Elems]

_MODES = ("auto", "sequential", "associative")


def aaren_scan_modes() -> tuple[str, ...]:
    """The accepted ``mode`` values of :func:`aaren_scan`."""
    return _MODES


def associative_scan(combine: Combine, elems: Elems, dim: int = 1, reverse: bool = False) -> Elems:
    """Inclusive scan of `elems` along `dim` under the associative `combine`.

    elems: tensors that all have the same length T along `dim` (other dims may differ
    and broadcast inside `combine`); `dim` indexes every tensor alike, so use a
    non-negative dim when their ranks differ. combine((a_0, a_1, ...), (b_0, b_1, ...))
    merges an earlier summary a with a later one b, elementwise over any leading
    positions. Returns a tuple like `elems` whose entry t is e_0 (+) ... (+) e_t, or with
    reverse=True e_{T-1} (+) ... (+) e_t: the scan runs backwards in time (as
    jax.lax.associative_scan's reverse), e.g. h_t = a_t h_{t+1} + b_t for the linear
    monoid.
    """
    if not elems:
        return elems
    n = elems[0].shape[dim]
    if any(e.shape[dim] != n for e in elems):
        raise ValueError(f"every element must have the same length along dim {dim}")
    if reverse:
        flipped = tuple(e.flip(dim) for e in elems)
        out = associative_scan(combine, flipped, dim)
        return tuple(e.flip(dim) for e in out)
    cur = elems
    step = 1
    while step < n:
        # Position t >= step absorbs the summary ending at t - step; the first `step`
        # positions already hold complete prefixes and stay as they are.
        earlier = tuple(e.narrow(dim, 0, n - step) for e in cur)
        later = tuple(e.narrow(dim, step, n - step) for e in cur)
        merged = combine(earlier, later)
        cur = tuple(
            torch.cat([e.narrow(dim, 0, step), c], dim) for e, c in zip(cur, merged, strict=True)
        )
        step *= 2
    return cur


def _safe_exp_diff(x: Tensor, m: Tensor) -> Tensor:
    """exp(x - m) for m >= x, with exp(-inf - (-inf)) = 0 instead of NaN: where m is
    -inf (nothing seen yet) x is -inf too, and shifting by 0 keeps the result 0."""
    m0 = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - m0)


def aaren_combine(a: Elems, b: Elems) -> Elems:
    """(m_a, u_a, w_a) (+) (m_b, u_b, w_b) -> (m, u_a e^{m_a-m} + u_b e^{m_b-m},
    w_a e^{m_a-m} + w_b e^{m_b-m}) with m = max(m_a, m_b).

    m, w (..., T), u (..., T, dv). The identity is (-inf, 0, 0)."""
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b)
    ea, eb = _safe_exp_diff(m_a, m), _safe_exp_diff(m_b, m)
    return m, u_a * ea[..., None] + u_b * eb[..., None], w_a * ea + w_b * eb


def _ratio(u: Tensor, w: Tensor) -> Tensor:
    """u / w, with 0 where w = 0 (no token seen: the softmax over nothing)."""
    pos = w > 0
    return torch.where(pos[..., None], u / torch.where(pos, w, torch.ones_like(w))[..., None], 0.0)


def aaren_scan(
    s: Tensor,
    v: Tensor,
    carry: tuple[Tensor, Tensor, Tensor] | None = None,
    mode: str = "auto",
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Causal softmax attention of one query per head, as a recurrence over time.

    s (B, H, T) scores (-inf marks a token to skip: an identity update); v (B, H, T, dv);
    carry (m (B, H), u (B, H, dv), w (B, H)) or None (m = -inf, u = 0, w = 0). Returns
    (o (B, H, T, dv), the final carry): o_t = sum_{i<=t} softmax(s)_i v_i over the carry
    and tokens 0..t. Accumulates in float32 at least; o is cast back to v's dtype, the
    carry keeps the accumulation dtype. Modes: "sequential" (a step loop, the
    reference), "associative" (``associative_scan`` over ``aaren_combine``), "auto"
    (associative on CUDA for T > SHORT_T, else the loop: on a CPU the loop is faster).
    """
    if mode not in _MODES:
        raise ValueError(f"aaren_scan mode must be one of {_MODES}, not {mode!r}")
    B, H, T, dv = v.shape
    dt = torch.promote_types(torch.promote_types(s.dtype, v.dtype), torch.float32)
    s, vv = s.to(dt), v.to(dt)
    if carry is None:
        m = s.new_full((B, H), float("-inf"))
        u, w = vv.new_zeros(B, H, dv), s.new_zeros(B, H)
    else:
        m, u, w = (c.to(dt) for c in carry)
    if mode == "auto":
        mode = "associative" if v.is_cuda and T > SHORT_T else "sequential"
    if T == 0:
        return v.new_zeros(B, H, 0, dv), (m, u, w)
    if mode == "sequential":
        outs = []
        for st, vt in zip(s.unbind(2), vv.unbind(2), strict=True):
            m_new = torch.maximum(m, st)
            a, b = _safe_exp_diff(m, m_new), _safe_exp_diff(st, m_new)
            u = u * a[..., None] + vt * b[..., None]
            w = w * a + b
            m = m_new
            outs.append(_ratio(u, w))
        return torch.stack(outs, dim=2).to(v.dtype), (m, u, w)
    # One token is the summary (s_t, v_t, 1), or the identity (-inf, 0, 0) where s_t is
    # -inf, so a skipped token adds nothing (and no 0 * inf) to u.
    seen = torch.isfinite(s)
    elems = (s, torch.where(seen[..., None], vv, 0.0), seen.to(dt))
    pm, pu, pw = associative_scan(aaren_combine, elems, dim=2)
    # The carry precedes every prefix: carry (+) prefix_t, broadcast over T.
    pm, pu, pw = aaren_combine((m[..., None], u[..., None, :], w[..., None]), (pm, pu, pw))
    return _ratio(pu, pw).to(v.dtype), (pm[..., -1], pu[..., -1, :], pw[..., -1])
