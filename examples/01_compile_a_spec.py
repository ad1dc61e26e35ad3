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
    logits, states = model(tokens, return_state=True)
    print(
        "logits", tuple(logits.shape), "states:", {k: tuple(v[0].shape) for k, v in states.items()}
    )
    print("some parameter names:", [k for k, _ in model.named_parameters()][:3])


if __name__ == "__main__":
    main()
