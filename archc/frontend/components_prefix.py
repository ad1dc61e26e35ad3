"""Parameter models of the prefix-conditioned components (registered by components.py).

Both split one token stream at a fixed position: the first `source` / `prefix` tokens
are a context read as a whole, the tokens after it are decoded causally from it.

- `seq2seq`: Sutskever et al. 2014's LSTM encoder-decoder over one stream
  `[source; target]`: an encoder LSTM reads the first `source` tokens; a second LSTM
  (its own weights) continues from the encoder's final (h, c) over the rest.
- `linear_attention`: kernelised linear attention (Katharopoulos et al. 2020) with a
  feature map, optionally with JRT-RNN's prefix (Arora et al. 2024): the first `prefix`
  tokens are encoded non-causally, with their own key projection, into a state that
  every position reads; every position also reads the causal sum over itself and the
  tokens before it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.frontend.components import Params


class Seq2SeqParams(Params):
    """LSTM encoder-decoder: (B, T, D) -> (B, T, hidden); positions < source come from
    the encoder, the others from the decoder started at the encoder's final state."""

    source: int = Field(gt=0, description="source tokens read by the encoder")
    hidden: int | None = Field(default=None, gt=0, description="LSTM width (default: input)")
    layers: int = Field(default=1, gt=0, description="stacked LSTM layers (both sides)")
    bias: bool = True


class LinearAttentionParams(Params):
    """y_i = phi(q_i) S_i / (phi(q_i) z_i): S_i sums phi(k_j)^T v_j over j <= i, plus
    (with `prefix: P`) phi(ke_j)^T v_j over the whole prefix j < P; z_i the same sums of
    phi(k_j). `feature_map`: elu (elu + 1) or taylor (Based's 2nd-order Taylor expansion
    of exp(q.k / sqrt(f)), feature width 1 + f + f^2 for `feature_dim` f)."""

    heads: int = Field(default=2, gt=0)
    feature_map: Literal["elu", "taylor"] = "elu"
    feature_dim: int | None = Field(
        default=None, gt=0, description="query/key width per head (default D / heads)"
    )
    prefix: int = Field(default=0, ge=0, description="non-causal prefix tokens (0: none)")
    chunk: int = Field(default=64, gt=0, description="chunk length of the causal part")
    bias: bool = False
