"""The cost model counts a control op's own work on top of its regions': loop injection
and LoRA adapters, halting heads, hier pooling and routing."""

from __future__ import annotations

import archc
from archc.ir.cost import model_cost

D, T = 8, 64


def _flops(layer: str) -> float:
    spec = f"""
model: c
vocab: 16
d_model: {D}
layers:
  - embed
  - {layer}
  - head
"""
    cost = model_cost(archc.to_graph(spec), T)
    return cost.forward_flops_per_token + cost.elementwise_flops_per_token


BODY = "body: [{mlp: {mult: 2}}]"


def test_loop_injection_and_lora_are_counted_per_step() -> None:
    plain = _flops(f"loop: {{steps: 3, tie: all, {BODY}}}")
    add = _flops(f"loop: {{steps: 3, tie: all, inject: add, {BODY}}}")
    concat = _flops(f"loop: {{steps: 3, tie: all, inject: concat, {BODY}}}")
    assert add - plain == 3 * D  # x + state, per step
    assert concat - plain == 3 * 2 * D * 2 * D  # the (D, 2D) linear, per step
    lora = _flops(f"loop: {{steps: 3, tie: all, lora: 2, {BODY}}}")
    # The MLP's two linears (D -> 2D -> D) each get B A x: 2 r (in + out) per step.
    assert lora - plain == 3 * (2 * 2 * (D + 2 * D) + 2 * 2 * (2 * D + D))


def test_halt_head_and_hier_routing_are_counted() -> None:
    base = _flops("dropout: 0.1")  # embed + head, no body work
    mlp = _flops("seq: [{mlp: {mult: 2}}]") - base
    # Worst case, max_steps runs of the body, plus per step the criterion and the masked
    # update (3 D): the Q-head pools (D) and maps to 2 values (4 D); delta differences (3 D).
    halt = _flops(f"halt: {{max_steps: 2, {BODY}}}")
    assert halt == base + 2 * mlp + 2 * (5 * D + 3 * D)
    halt_delta = _flops(f"halt: {{max_steps: 2, criterion: delta, {BODY}}}")
    assert halt_delta == base + 2 * mlp + 2 * (3 * D + 3 * D)
    stride = _flops(f"hier: {{down: {{stride: 4}}, {BODY}}}")
    router = _flops(f"hier: {{down: {{router: true, target: 4}}, {BODY}}}")
    # A router hier up-samples by H-Net's EMA (its default): the (L, L) smoothing matrix
    # times the (L, D) chunks, L = T / 4, plus its weights (4 per entry), per token.
    ema = 2.0 * (T / 4) * D / 4 + 4.0 * (T / 4) / 4
    assert router - stride == 4 * D * D + 6 * D + ema  # + the router's q/k maps and cosine
