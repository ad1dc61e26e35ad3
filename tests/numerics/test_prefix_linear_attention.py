"""linear_attention (with JRT-RNN's non-causal prefix) against a direct quadratic form.

Oracle, written in float64 from the equations (Katharopoulos et al. 2020; Arora et al.
2024): with feature map phi, the weight of key j for query i is
    A_ij = phi(q_i) . phi(k_j) [j <= i]  +  phi(q_i) . phi(ke_j) [j < P]
(the prefix block full, the rest causal) and y_i = sum_j A_ij v_j / sum_j A_ij, per head.
phi is elu + 1, or the Taylor features whose products must equal 1 + s + s^2 / 2 with
s = q.k / sqrt(f) (checked against that formula, not against the features themselves).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracle_helpers import assert_close, run_in_chunks, spec_text

import archc
from archc.backends.torch.modules.prefix import feature_map, prefix_linear_attention


def _kernel(q: torch.Tensor, k: torch.Tensor, kind: str) -> torch.Tensor:
    """(.., T, f) x (.., S, f) -> (.., T, S) kernel values from their closed form."""
    if kind == "elu":
        return (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return 1 + s + s * s / 2


def _reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ke: torch.Tensor | None,
    heads: int,
    kind: str,
    prefix: int,
) -> torch.Tensor:
    b, t, _ = q.shape
    qh, kh, vh = (a.view(b, t, heads, -1).transpose(1, 2).double() for a in (q, k, v))
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    weights = _kernel(qh, kh, kind) * causal
    if prefix > 0:
        assert ke is not None
        keh = ke.view(b, t, heads, -1).transpose(1, 2).double()
        in_prefix = torch.zeros(t, t, dtype=torch.bool)
        in_prefix[:, : min(prefix, t)] = True
        weights = weights + _kernel(qh, keh, kind) * in_prefix
    y = (weights @ vh) / weights.sum(-1, keepdim=True)
    return y.transpose(1, 2).reshape(b, t, -1)


@pytest.mark.parametrize("chunk", [4, 64])
@pytest.mark.parametrize("prefix", [0, 1, 5, 13, 40])
@pytest.mark.parametrize("kind", ["elu", "taylor"])
def test_matches_quadratic_reference(kind: str, prefix: int, chunk: int) -> None:
    b, t, heads, f, dv = 2, 13, 2, 3, 4
    q, k, ke = (torch.randn(b, t, heads * f, dtype=torch.float64) for _ in range(3))
    v = torch.randn(b, t, heads * dv, dtype=torch.float64)
    y, _ = prefix_linear_attention(q, k, v, ke if prefix else None, heads, kind, prefix, chunk)
    assert_close(y, _reference(q, k, v, ke, heads, kind, prefix), tol=1e-12)


def test_taylor_features_reproduce_the_taylor_kernel() -> None:
    q, k = torch.randn(5, 7, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    got = feature_map(q, "taylor") @ feature_map(k, "taylor").T
    assert feature_map(q, "taylor").shape == (5, 1 + 7 + 49)
    assert_close(got, _kernel(q, k, "taylor"), tol=1e-12)


def test_prefix_is_bidirectional_and_the_rest_causal() -> None:
    b, t, heads, f, p = 1, 12, 2, 4, 5
    q, k, ke, v = (torch.randn(b, t, heads * f, dtype=torch.float64) for _ in range(4))
    base, _ = prefix_linear_attention(q, k, v, ke, heads, "elu", p)
    for j in range(t):
        v2 = v.clone()
        v2[:, j] += 1.0
        y, _ = prefix_linear_attention(q, k, v2, ke, heads, "elu", p)
        changed = (y - base).abs().amax(dim=(0, 2)) > 1e-9
        if j < p:  # a prefix token reaches every position, earlier prefix ones included
            assert changed.all()
        else:  # after the prefix: never an earlier position, always itself
            assert not changed[:j].any() and changed[j]


def _model_spec(prefix: int, kind: str = "taylor") -> str:
    la = {"heads": 2, "feature_map": kind, "prefix": prefix, "chunk": 4}
    if kind == "taylor":
        la["feature_dim"] = 3
    return spec_text(["embed", {"linear_attention": la}, "head"], d_model=8, vocab=13)


def test_compiled_layer_is_projections_around_the_reference() -> None:
    model = archc.compile(_model_spec(6), seed=2).double().eval()
    sd = model.state_dict()
    pre = "layers.1.linear_attention"
    assert {f"{pre}.{n}.weight" for n in ("q", "k", "v", "ke", "o")} <= set(sd)
    ids = torch.randint(0, 13, (2, 10))
    x = sd["layers.0.embed.weight"][ids]
    q, k, v, ke = (x @ sd[f"{pre}.{n}.weight"].T for n in ("q", "k", "v", "ke"))
    a = _reference(q, k, v, ke, 2, "taylor", 6)
    want = (a @ sd[f"{pre}.o.weight"].T) @ sd["layers.2.head.weight"].T
    with torch.no_grad():
        assert_close(model(ids), want, tol=1e-10)


def test_causal_layer_streams_in_chunks() -> None:
    model = archc.compile(_model_spec(0, "elu"), seed=4).double().eval()
    ids = torch.randint(0, 13, (2, 11))
    with torch.no_grad():
        whole = model(ids)
        y, _ = run_in_chunks(model, ids, (3, 1, 7))
    assert_close(y, whole, tol=1e-12)


def test_prefix_layer_refuses_to_stream() -> None:
    model = archc.compile(_model_spec(4), seed=4).eval()
    with pytest.raises(ValueError, match="prefix"):
        run_in_chunks(model, torch.randint(0, 13, (1, 5)), (2, 3))
