"""The `select-scan-mode` pass: fix every `scan` left at mode "auto" to a concrete mode.

The rule (`select_scan_mode`) reads the cell's family (which modes its recurrence
admits, from the op table), the sequence length T and the device:

- T <= 16: sequential. A short loop beats the setup of any parallel form.
- chunked where the cell has it (diagonal linear and matrix-state cells): the two-level
  chunked scan is the fastest exact form on CPU and GPU (``archc bench scan``: chunked
  0.36x the time of the loop at T=4096, the associative scan 7x; on CUDA the Triton
  kernels are the chunked form).
- newton (ParaRNN) for nonlinear cells with a diagonal Jacobian, on CUDA only and for
  T >= 64: each Newton iteration is a parallel scan, which pays off with thousands of
  GPU threads; on a CPU the exact loop is faster (bench: Newton 2.5x slower at T=4096
  on 2 threads).
- associative for cells whose only parallel form is the associative scan (Aaren), on
  CUDA; on CPU the loop wins for the same reason as Newton.
- everything else (LSTM/GRU/RNN with dense recurrent weights, tau-RNN, LRU): sequential,
  the only exact form, run by fused kernels where `assign-kernels` finds one.

Modes a spec fixes explicitly are kept. T unknown (no `train.seq_len`) leaves "auto",
which the modules then resolve at run time with the same thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from archc.ir.graph import Graph, Node, with_attrs
from archc.ir.ops_scan import scan_modes
from archc.passes.base import PassResult, map_nodes
from archc.passes.pipeline import register_pass

# T at or below which the sequential loop is chosen (also linear_scan's run-time auto).
SHORT_T = 16
# T from which a Newton solve on CUDA beats the loop.
NEWTON_MIN_T = 64


def select_scan_mode(cell: str, seq_len: int | None, device: str) -> tuple[str, str]:
    """(mode, reason) for a scan of `cell` over `seq_len` steps on `device` ("cpu", "cuda").

    seq_len None: ("auto", reason) -- the choice waits for the run-time length.
    """
    modes = scan_modes(cell)
    parallel = [m for m in modes if m not in ("sequential", "auto")]
    if not parallel:
        return "sequential", f"{cell} has no parallel form"
    if seq_len is None:
        return "auto", "sequence length unknown until run time"
    if seq_len <= SHORT_T:
        return "sequential", f"T={seq_len} <= {SHORT_T}: the loop is fastest"
    if "chunked" in parallel:
        return "chunked", f"{cell} is linear in its state: chunked scan"
    on_gpu = device.startswith("cuda")
    if "newton" in parallel:
        if on_gpu and seq_len >= NEWTON_MIN_T:
            return "newton", f"diagonal Jacobian, T={seq_len} on {device}: Newton solve"
        return "sequential", f"Newton pays only on a GPU with T >= {NEWTON_MIN_T}"
    if on_gpu:
        return parallel[0], f"{parallel[0]} scan on {device}"
    return "sequential", f"on {device} the loop beats the {parallel[0]} scan"


@register_pass
@dataclass(frozen=True)
class SelectScanMode:
    """Resolve mode "auto" on every scan node for sequences of `seq_len` on `device`."""

    name: ClassVar[str] = "select-scan-mode"
    seq_len: int | None = None
    device: str = "cpu"

    def run(self, graph: Graph) -> PassResult:
        def rewrite(node: Node) -> Node | None:
            if node.op != "scan" or node.attrs["mode"] != "auto":
                return None
            mode, _ = select_scan_mode(node.attrs["cell"], self.seq_len, self.device)
            return None if mode == "auto" else with_attrs(node, mode=mode)

        return map_nodes(graph, rewrite)

    def report(self, graph: Graph) -> list[tuple[str, str, str]]:
        """(path, chosen mode, reason) of every scan node, for `archc info`-style output."""
        rows = []
        for node in graph.walk():
            if node.op != "scan":
                continue
            mode, why = select_scan_mode(node.attrs["cell"], self.seq_len, self.device)
            if node.attrs["mode"] != "auto" and mode != node.attrs["mode"]:
                mode, why = node.attrs["mode"], "fixed by the spec"
            rows.append((node.path, mode, why))
        return rows
