"""Compile a spec written inline, inspect its IR and cost, and run it.

python examples/01_compile_a_spec.py
"""

from __future__ import annotations

import torch

import archc
from archc.ir.cost import model_cost
from archc.ir.printer import print_graph

SPEC = """
model: example-hybrid
vocab: 256
d_model: 64
define:
  attn_block:
    - residual: [{norm: rms}, {attention: {heads: 4, pos: rope}}]
    - residual: [{norm: rms}, {mlp: {mult: 3, act: swiglu}}]
layers:
  - embed
  - lstm: {hidden: 64}
  - loop: {steps: 3, body: [attn_block]}   # one block, applied three times
  - norm: rms
  - head: {tied: true}
"""


def main() -> None:
    graph = archc.to_graph(SPEC)
    print(print_graph(graph).splitlines()[0], "...", f"({len(graph)} top-level nodes)")
    cost = model_cost(graph, seq_len=128)
    print(
        f"parameters {cost.parameters:,}; forward FLOPs/token {cost.forward_flops_per_token:,.0f}"
    )
    model = archc.compile(SPEC)
    tokens = torch.randint(0, 256, (2, 32))
    # return_state gives everything needed to continue the sequence: "_pos" (tokens seen)
    # plus each stateful layer's carry (LSTM (h, c), attention KV cache, conv buffer).
    logits, states = model(tokens, return_state=True)
    carries = {k: tuple(v[0].shape) for k, v in states.items() if k != "_pos"}
    print("logits", tuple(logits.shape), "position", states["_pos"], "states:", carries)
    more, _ = model(tokens[:, :1], state=states, return_state=True)  # one more token
    print("next-token logits", tuple(more.shape))
    print("some parameter names:", [k for k, _ in model.named_parameters()][:3])


if __name__ == "__main__":
    main()
