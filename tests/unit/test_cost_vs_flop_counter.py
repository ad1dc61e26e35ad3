"""The IR cost model against an independent counter: torch.utils.flop_counter on the
torch lowering, for every spec in specs/.

What is compared: matmul-class FLOPs (every mm/addmm/bmm/convolution/SDPA as 2 m n k),
the class FlopCounterMode counts; ModelCost keeps elementwise work apart. Forward: the
counted FLOPs of one forward of a (B, T) batch against forward_flops_per_token * B * T;
backward: the counted FLOPs of loss.backward() against backward_flops_per_token * B * T;
both within 10%. Parameters: the module's distinct parameters (tied weights once) equal
the model's count exactly.

How it is measured (the same for every spec), and why:
- eval mode: the network the cost model prices, deterministic (SortedNet runs its eval
  width and depth, a sampled loop its full step count, a halt with its zero-initialised
  Q-head every step); backward still runs.
- SDPA through its math backend: on CPU the fused flash kernel
  (_scaled_dot_product_flash_attention_for_cpu) is not in the counter's table, so it
  would count attention as 0; the math backend runs the same dense products as bmm,
  which the counter sees.
- mkldnn off: on CPU nn.LSTM runs one fused mkldnn_rnn_layer op the counter cannot
  see; without mkldnn torch runs it step by step through mm/addmm (the same product
  as every CUDA/cuDNN path, just split into steps).

Listed exceptions (everything else is compared directly):
- aten.convolution_backward is counted with a corrected formula (CONV_BACKWARD_FIX):
  torch's formula ignores `groups` for the weight gradient and so counts a depthwise
  conv's weight gradient `groups` times over (64x for conv.yaml's width-64 depthwise
  convs). The fix is torch's own conv_flop_count with the weight-gradient term divided
  by groups.
- Data-dependent chunking (hier down: router, H-Net): how many chunks the router opens
  depends on the data and the weights; the cost model prices it at the rate its ratio
  loss aims at (1 / target). The test records the chunks the module actually ran and
  prices the hier at that rate (ROUTER_SPECS). HAT's whitespace split gets an input
  with a space every 6th byte, the rate the cost model assumes (1 / 6), and is
  compared unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.utils.flop_counter as tfc
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import archc
from archc.backends.torch.modules import hier as hier_module
from archc.ir.cost import ModelCost, model_cost
from archc.ir.ops import get_op
from archc.ir.printer import structural_hash

# torch.backends.mkldnn.flags warns about TF32 on Intel GPUs it does not have.
pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
SPECS = Path(__file__).resolve().parents[2] / "specs"
ALL_SPECS = sorted(p.name for p in SPECS.iterdir() if p.suffix in (".yaml", ".arch"))
B, T = 2, 32
TOL = 0.10
SPLIT_T = 36  # HAT: 6 words of 6 bytes, a chunk per word
ROUTER_SPECS = {"hnet-1stage.yaml", "hnet-2stage.yaml", "hnet-2stage.arch"}


def _conv_backward(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    groups: int,
    output_mask: list[bool],
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """torch's convolution_backward formula with the weight gradient divided by groups."""

    def t(shape: list[int]) -> list[int]:
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # grad input: a transposed conv of grad_out with the weight
        flops += tfc.conv_flop_count(grad_out_shape, w_shape, x_shape, transposed=not transposed)
    if output_mask[1]:  # grad weight: per group, a conv of the input with grad_out
        if transposed:
            gw = tfc.conv_flop_count(t(grad_out_shape), t(x_shape), t(w_shape))
        else:
            gw = tfc.conv_flop_count(t(x_shape), t(grad_out_shape), t(w_shape))
        flops += gw // groups
    return flops


CONV_BACKWARD_FIX = {torch.ops.aten.convolution_backward: _conv_backward}


def test_conv_backward_fix_counts_a_depthwise_weight_gradient_once() -> None:
    """The correction against a hand count: a depthwise conv (D channels, kernel K) over
    T steps costs 2 D K T per gradient (input and weight), like its forward."""
    d, k, t = 8, 3, 10
    conv = torch.nn.Conv1d(d, d, k, groups=d, bias=False)
    x = torch.randn(1, d, t, requires_grad=True)
    y = conv(x)
    with FlopCounterMode(display=False, custom_mapping=CONV_BACKWARD_FIX) as fc:
        y.sum().backward()
    out_len = t - k + 1
    # grad input: each of the out_len outputs spreads to k inputs per channel.
    assert fc.get_total_flops() == 2 * d * k * out_len * 2
    with FlopCounterMode(display=False) as raw:
        conv(x).sum().backward()
    assert raw.get_total_flops() > fc.get_total_flops()  # torch's own formula over-counts


@contextmanager
def _measured_mode() -> Iterator[None]:
    with sdpa_kernel(SDPBackend.MATH), torch.backends.mkldnn.flags(enabled=False):
        yield


def _inputs(model: archc.CompiledModel, name: str) -> torch.Tensor:
    g = model.graph
    first = g.node(g.inputs[0])
    gen = torch.Generator().manual_seed(0)
    if name.startswith("hat."):  # bytes "abcde " repeated: a word starts every 6 bytes
        row = torch.tensor([97, 98, 99, 100, 101, 32]).repeat(SPLIT_T // 6)
        return row.expand(B, SPLIT_T).clone()
    if first.attrs["kind"] == "tokens":
        return torch.randint(0, model.spec.vocab, (B, T), generator=gen)
    return torch.randn(B, T, first.attrs["dim"], generator=gen)


@contextmanager
def _recording_chunks(rates: list[float]) -> Iterator[None]:
    """Record, per call of a chunking hier, the coarse steps it ran over the fine ones."""
    original = hier_module.select_padded

    def select_padded(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = original(x, keep)
        if x.shape[-1] > 1:  # the chunks themselves (not their probabilities)
            rates.append(out[0].shape[1] / x.shape[1])
        return out

    hier_module.select_padded = select_padded
    try:
        yield
    finally:
        hier_module.select_padded = original


def _cost_at_rates(model: archc.CompiledModel, seq: int, rates: list[float]) -> ModelCost:
    """The cost model with each router hier (outermost first) priced at a measured rate."""
    routers = [n for n in model.graph.walk() if n.op == "hier" and n.attrs["down"] == "router"]
    assert len(routers) == len(rates), (len(routers), rates)
    by_attrs = {id(n.attrs): r for n, r in zip(routers, rates, strict=True)}
    extra = get_op("hier").extra
    original = extra["region_rate"]
    extra["region_rate"] = lambda a: by_attrs.get(id(a)) or original(a)
    try:
        return model_cost(model.graph, seq)
    finally:
        extra["region_rate"] = original


def _measure(name: str) -> tuple[float, float, float, float, int, int]:
    """(counted fwd, model fwd, counted bwd, model bwd, module params, model params)."""
    torch.manual_seed(0)
    model = archc.compile(SPECS / name)
    model.eval()
    # The cost model prices the trained architecture: past any training-time switch
    # (a depth up-scale runs its final, deeper stack).
    model.begin_step(10**9)
    x = _inputs(model, name)
    seq = x.shape[1]
    rates: list[float] = []
    with _measured_mode(), _recording_chunks(rates):
        with FlopCounterMode(display=False, custom_mapping=CONV_BACKWARD_FIX) as fwd:
            y = model(x)
        with FlopCounterMode(display=False, custom_mapping=CONV_BACKWARD_FIX) as bwd:
            y.float().square().mean().backward()
    cost = (
        _cost_at_rates(model, seq, rates) if name in ROUTER_SPECS else model_cost(model.graph, seq)
    )
    tokens = x.shape[0] * seq
    params = sum(p.numel() for p in model.parameters())  # deduplicated: tied once
    return (
        float(fwd.get_total_flops()),
        cost.forward_flops_per_token * tokens,
        float(bwd.get_total_flops()),
        cost.backward_flops_per_token * tokens,
        params,
        cost.parameters,
    )


@pytest.mark.parametrize("name", ALL_SPECS)
def test_cost_model_matches_flop_counter(name: str) -> None:
    twin = SPECS / name.replace(".arch", ".yaml")
    if name.endswith(".arch") and twin.exists():
        # A DSL twin with the same IR as its YAML spec lowers to the same module: the
        # YAML's measurement covers it. One that differs is measured on its own.
        same = structural_hash(archc.to_graph(SPECS / name)) == structural_hash(
            archc.to_graph(twin)
        )
        if same:
            return
    fwd, model_fwd, bwd, model_bwd, params, model_params = _measure(name)
    assert params == model_params
    assert fwd > 0 and bwd > 0
    assert model_fwd == pytest.approx(fwd, rel=TOL), f"forward model/counted {model_fwd / fwd:.3f}"
    assert model_bwd == pytest.approx(bwd, rel=TOL), f"backward model/counted {model_bwd / bwd:.3f}"


def _state_bytes_per_sample(state: object, batch: int) -> float:
    """Bytes of every tensor the module holds in its returned state, per sample."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / batch
    if isinstance(state, dict):
        return sum(_state_bytes_per_sample(v, batch) for k, v in state.items() if k != "_pos")
    if isinstance(state, (tuple, list)):
        return sum(_state_bytes_per_sample(v, batch) for v in state)
    return 0.0


def _held_state(name: str, lengths: tuple[int, ...]) -> tuple[ModelCost, list[float]]:
    model = archc.compile(SPECS / name).eval()
    sizes = []
    for t in lengths:
        x = torch.randint(0, model.spec.vocab, (B, t), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _, state = model(x, return_state=True)
        sizes.append(_state_bytes_per_sample(state, B))
    return model_cost(model.graph, T), sizes


@pytest.mark.parametrize("name", ["gpt.yaml", "llama.yaml"])
def test_kv_cache_grows_linearly_by_the_modelled_bytes(name: str) -> None:
    """Oracle: the KV caches the module returns after 8, 16 and 24 tokens."""
    cost, sizes = _held_state(name, (8, 16, 24))
    growth = [(b - a) / 8 for a, b in itertools.pairwise(sizes)]
    assert cost.kv_cache_bytes_per_token > 0
    assert growth == [cost.kv_cache_bytes_per_token] * 2  # linear in T, at the modelled rate
    assert cost.state_bytes_per_sequence == 0


@pytest.mark.parametrize("name", ["lstm.yaml", "gru.yaml", "parity-lstm.yaml"])
def test_recurrent_state_is_constant_and_matches_the_module(name: str) -> None:
    """Oracle: the final carries the module returns, the same size after 8 or 24 tokens."""
    cost, sizes = _held_state(name, (8, 24))
    assert cost.kv_cache_bytes_per_token == 0
    assert sizes == [cost.state_bytes_per_sequence] * 2


@pytest.mark.parametrize("name", ["rmt.yaml", "hmt.yaml", "titans-mag.yaml"])
def test_segment_and_memory_specs_have_no_growing_cache(name: str) -> None:
    cost = model_cost(archc.to_graph(SPECS / name), T)
    assert cost.kv_cache_bytes_per_token == 0
    assert cost.state_bytes_per_sequence > 0
