"""The IR cost model: parameters, FLOPs, activation memory, state and KV-cache sizes.

Every figure comes from the op table's param and cost rules; loops count each step's
region once per step, and parameters once per distinct copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from archc.ir.graph import Graph
from archc.ir.ops import Cost, get_op
from archc.ir.ops_segment import segment_body_len, segment_cost

MIXERS = {"attention", "scan", "conv1d", "memory", "titans_mac", "block_attention"}


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
        if node.op == "segment":  # the body sees one segment at a time: ops_segment.py
            rc, rp, rl, rn = _accumulate(node.regions[0], segment_body_len(node.attrs, seq_len))
            sc = segment_cost(node.attrs, _node_cost(graph, node.id, seq_len), rc, seq_len)
            flops, act, state = flops + sc.flops, act + sc.act_bytes, state + sc.state_bytes
            params, layers, nodes = params + rp, layers + rl, nodes + rn
            continue
        if node.regions:
            # Control ops other than loops (hier, segment) run their region once.
            # A halt is costed at its worst case, max_steps runs of its body. The op's
            # own work (loop injection and LoRA, hier pooling and routing, a Q-head)
            # comes from its cost rule, on top of its regions'.
            own = _node_cost(graph, node.id, seq_len)
            flops, act, state = flops + own.flops, act + own.act_bytes, state + own.state_bytes
            kv += own.kv_bytes
            steps = node.attrs.get("steps", node.attrs.get("max_steps", 1))
            copies = len(node.regions)
            for c, region in enumerate(node.regions):
                uses = len(range(c, steps, copies))  # steps that run copy c
                if node.op == "select":  # a path program runs pool layer c this often
                    uses = node.attrs["program"].count(c)
                rc, rp, rl, rn = _accumulate(region, seq_len)
                # A region on a coarser sequence (hier: T/k) runs for a fraction of tokens.
                rate = get_op(node.op).extra.get("region_rate", lambda a: 1.0)(node.attrs)
                flops += uses * rate * rc.flops
                act += uses * rate * rc.act_bytes
                state += rc.state_bytes
                kv += round(uses * rate * rc.kv_bytes)
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
        elif node.op == "nested":  # a SortedNet stack: its MLPs at full depth
            layers += node.attrs["layers"]
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
