"""The IR cost model: parameters, FLOPs, activation memory, state and KV-cache sizes.

Every figure comes from the op table's param and cost rules; loops count each step's
region once per step, and parameters once per distinct copy.

What "FLOPs" means here: `forward_flops_per_token` and `backward_flops_per_token` count
matmul-class work only (every product and convolution as 2 m n k), the class that
torch.utils.flop_counter.FlopCounterMode counts, as the torch lowering executes it:
attention is dense (SDPA's score and value products over all T keys; a causal or
windowed mask hides entries but the math path and the counter still do and count them),
control ops are costed at their worst case (a halt runs max_steps, a sampled loop its
largest step count) and a loop's steps run without gradient (`grad: last(k)`) add no
backward work. Elementwise work (norms, activations, residual adds, softmax, gates of a
recurrence) is the separate figure `elementwise_flops_per_token`, forward only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from archc.ir.graph import Graph
from archc.ir.ops import Cost, get_op
from archc.ir.ops_segment import segment_body_len, segment_cost

MIXERS = {
    "attention",
    "scan",
    "conv1d",
    "memory",
    "titans_mac",
    "block_attention",
    "seq2seq",
    "linear_attention",
}


@dataclass(frozen=True)
class ModelCost:
    """Whole-model figures at sequence length `seq_len`."""

    seq_len: int
    parameters: int
    forward_flops_per_token: float  # matmul-class
    backward_flops_per_token: float  # matmul-class
    activation_bytes_per_token: float
    state_bytes_per_sequence: int
    kv_cache_bytes_per_token: int
    layers: int
    nodes: int
    elementwise_flops_per_token: float = 0.0  # forward, not matmul-class

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Sum:
    """A running total of node costs (per token) and structure counts."""

    fwd: float = 0.0
    bwd: float = 0.0
    ew: float = 0.0
    act: float = 0.0
    state: int = 0
    kv: int = 0
    params: int = 0
    layers: int = 0
    nodes: int = 0

    def add_cost(self, c: Cost, runs: float = 1.0, grad_runs: float | None = None) -> None:
        """Add `runs` executions of a node, `grad_runs` of them recorded for backward."""
        bwd = 2.0 * c.flops if c.bwd_flops is None else c.bwd_flops
        self.fwd += runs * c.flops
        self.bwd += (runs if grad_runs is None else grad_runs) * bwd
        self.ew += runs * c.ew_flops
        self.act += runs * c.act_bytes
        self.state += c.state_bytes
        self.kv += round(runs * c.kv_bytes)

    def add_region(self, r: _Sum, runs: float, grad_runs: float) -> None:
        """Add a region run `runs` times (per token), `grad_runs` of them with gradient."""
        self.fwd += runs * r.fwd
        self.bwd += grad_runs * r.bwd
        self.ew += runs * r.ew
        self.act += runs * r.act
        self.state += r.state
        self.kv += round(runs * r.kv)
        self.params += r.params
        self.nodes += r.nodes

    def as_cost(self) -> Cost:
        return Cost(self.fwd, self.act, self.state, self.kv, self.ew, self.bwd)


def _node_cost(graph: Graph, node_id: int, seq_len: int) -> Cost:
    node = graph.node(node_id)
    ins = [graph.type_of(v) for v in node.inputs]
    return get_op(node.op).cost(node.attrs, ins, node.outputs, seq_len)


def _grad_runs(attrs: dict, c: int, steps: int, copies: int) -> int:
    """How many of the runs of region copy `c` keep gradient: a loop with `grad: k`
    runs its first steps - k iterations without gradient."""
    k = attrs.get("grad", 0)
    first = steps - k if k else 0
    return len(range(c, steps, copies)) - len(range(c, min(first, steps), copies))


def _accumulate(graph: Graph, seq_len: int) -> _Sum:
    """The summed cost of a graph, loops expanded."""
    s = _Sum()
    for node in graph.nodes():
        s.nodes += 1
        s.params += sum(p.numel for p in node.params)
        if node.op == "segment":  # the body sees one segment at a time: ops_segment.py
            body = _accumulate(node.regions[0], segment_body_len(node.attrs, seq_len))
            own = _node_cost(graph, node.id, seq_len)
            s.add_cost(segment_cost(node.attrs, own, body.as_cost(), seq_len))
            s.params += body.params
            s.layers += body.layers
            s.nodes += body.nodes
            continue
        if node.regions:
            # A control op's own work (loop injection and LoRA, hier pooling and routing,
            # a Q-head) comes from its cost rule, on top of its regions'. A halt is costed
            # at its worst case, max_steps runs of its body.
            steps = node.attrs.get("steps", node.attrs.get("max_steps", 1))
            copies = len(node.regions)
            # A loop's own per-step work (injection, LoRA) has gradient on its grad steps.
            k = node.attrs.get("grad", 0) if node.op == "loop" else 0
            grad_share = min(k, steps) / steps if k else 1.0
            s.add_cost(_node_cost(graph, node.id, seq_len), 1.0, grad_share)
            # A region on a coarser sequence (hier: T/k) runs for a fraction of tokens.
            rate = get_op(node.op).extra.get("region_rate", lambda a: 1.0)(node.attrs)
            for c, region in enumerate(node.regions):
                uses = len(range(c, steps, copies))  # steps that run copy c
                grads = _grad_runs(node.attrs, c, steps, copies) if node.op == "loop" else uses
                if node.op == "select":  # a path program runs pool layer c this often
                    # Each sample runs one program: the mean over them (a uniform draw).
                    programs = node.attrs["programs"]
                    uses = grads = sum(p.count(c) for p in programs) / len(programs)
                if node.op == "upscale":  # after the up-scale every block runs once
                    uses = grads = 1
                # ... and sees that shorter sequence (its attention spans T * rate steps).
                r = _accumulate(region, max(1, round(seq_len * rate)))
                s.add_region(r, uses * rate, grads * rate)
                s.layers += round(uses * r.layers)
            continue
        s.add_cost(_node_cost(graph, node.id, seq_len))
        if node.op in MIXERS or (node.op == "linear" and node.path.endswith(".down")):
            s.layers += 1  # one sequence mixer or one MLP
        elif node.op == "nested":  # a SortedNet stack: its MLPs at full depth
            s.layers += node.attrs["layers"]
    return s


def model_cost(graph: Graph, seq_len: int = 1024) -> ModelCost:
    """Cost figures for the whole graph at sequence length `seq_len`."""
    s = _accumulate(graph, seq_len)
    return ModelCost(
        seq_len=seq_len,
        parameters=s.params,
        forward_flops_per_token=s.fwd,
        backward_flops_per_token=s.bwd,
        activation_bytes_per_token=s.act,
        state_bytes_per_sequence=s.state,
        kv_cache_bytes_per_token=s.kv,
        layers=s.layers,
        nodes=s.nodes,
        elementwise_flops_per_token=s.ew,
    )
