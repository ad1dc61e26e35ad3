"""The IR cost model: parameters, FLOPs, activation memory, state and KV-cache sizes.

Every figure comes from the op table's param and cost rules; loops count each step's
region once per step, and parameters once per distinct copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from archc.ir.graph import Graph
from archc.ir.ops import Cost, get_op

MIXERS = {"attention", "scan", "conv1d"}


@dataclass(frozen=True)
class ModelCost:
    """Whole-model figures at sequence length `seq_len`."""

    seq_len: int
    parameters: int
    forward_flops_per_token: float
    backward_flops_per_token: float
    activation_bytes_per_token: float
    state_bytes_per_sequence: int
    kv_cache_bytes_per_token: int
    layers: int
    nodes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _node_cost(graph: Graph, node_id: int, seq_len: int) -> Cost:
    node = graph.node(node_id)
    ins = [graph.type_of(v) for v in node.inputs]
    return get_op(node.op).cost(node.attrs, ins, node.outputs, seq_len)


def _accumulate(graph: Graph, seq_len: int) -> tuple[Cost, int, int, int]:
    """(summed cost, parameters, mixer layers, nodes) of a graph, loops expanded."""
    flops = act = 0.0
    state = kv = params = layers = nodes = 0
    for node in graph.nodes():
        nodes += 1
        params += sum(p.numel for p in node.params)
        if node.regions:
            steps, copies = node.attrs["steps"], len(node.regions)
            for c, region in enumerate(node.regions):
                uses = len(range(c, steps, copies))  # steps that run copy c
                rc, rp, rl, rn = _accumulate(region, seq_len)
                flops += uses * rc.flops
                act += uses * rc.act_bytes
                state += rc.state_bytes
                kv += uses * rc.kv_bytes
                params += rp
                layers += uses * rl
                nodes += rn
            continue
        c = _node_cost(graph, node.id, seq_len)
        flops += c.flops
        act += c.act_bytes
        state += c.state_bytes
        kv += c.kv_bytes
        if node.op in MIXERS or (node.op == "linear" and node.path.endswith(".down")):
            layers += 1  # one sequence mixer or one MLP
    return Cost(flops, act, state, kv), params, layers, nodes


def model_cost(graph: Graph, seq_len: int = 1024) -> ModelCost:
    """Cost figures for the whole graph at sequence length `seq_len`."""
    c, params, layers, nodes = _accumulate(graph, seq_len)
    return ModelCost(
        seq_len=seq_len,
        parameters=params,
        forward_flops_per_token=c.flops,
        backward_flops_per_token=2.0 * c.flops,  # grads w.r.t. inputs and weights
        activation_bytes_per_token=c.act_bytes,
        state_bytes_per_sequence=c.state_bytes,
        kv_cache_bytes_per_token=c.kv_bytes,
        layers=layers,
        nodes=nodes,
    )
