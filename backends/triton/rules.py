"""Kernel rules: which Triton kernel runs each IR `scan` node, and why not.

DESIGN section 6: a rule's ``can_lower(node, device) -> (ok, reason)`` decides. Each
``KernelRule`` names a kernel package under backends/triton/, the scan cells it
implements, a check of the node's attributes (sizes the kernel cannot hold, modes it
does not run in) and whether the torch lowering actually calls it (a kernel that
exists but is not wired in would otherwise be reported as used). Run-time checks
(dtype, batch size) stay with the kernels' own ``can_lower`` in their op.py.

``assign_kernels(graph, device)`` maps every scan node's path to (kernel or None,
reason); ``format_assignments`` prints it (``archc info SPEC --device cuda``). Nothing
here imports triton or a kernel: the device is only a name, so this runs without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from archc.backends.triton.rnn_cells import MAX_HIDDEN
from archc.ir.graph import Graph, Node
from archc.ir.ops_scan import matrix_dims

__all__ = [
    "KERNELS",
    "KernelRule",
    "assign_kernels",
    "can_lower",
    "format_assignments",
    "kernel_name",
    "rule_for",
]

_PKG = "archc.backends.triton"
# Grid axis 1 of diag_scan counts blocks of 16 features: at most 65535 of them.
_DIAG_MAX_FEATURES = 65535 * 16
# gla_scan/op.py and delta_scan/op.py: the key dimension is one register tile.
_MATRIX_MAX_DK = 128


@dataclass(frozen=True)
class KernelRule:
    """One fused kernel: its name, package (backends/triton/<package>), the scan cells it
    runs, ``check(node)`` -> why the node's attributes rule it out (None if they do not),
    and ``wired()`` -> why the torch lowering does not call it (None if it does)."""

    name: str
    package: str
    cells: tuple[str, ...]
    check: Callable[[Node], str | None]
    wired: Callable[[], str | None]


@cache
def _source(module: str) -> str:
    """Source text of an archc module ('' if it cannot be imported)."""
    try:
        return inspect.getsource(importlib.import_module(module))
    except (ImportError, OSError):
        return ""


def _called_from(package: str, *modules: str) -> Callable[[], str | None]:
    """wired() for a kernel that torch code reaches by importing ``<_PKG>.<package>``
    lazily: wired when one of ``modules`` names it."""

    def wired() -> str | None:
        if any(f"triton.{package}" in _source(m) for m in modules):
            return None
        return f"the torch lowering does not call the {package} kernel yet"

    return wired


def _rnn_class_wired(cell: str) -> Callable[[], str | None]:
    def wired() -> str | None:
        from archc.backends.torch.lower import _RNN_CLASS

        if "Fused" in _RNN_CLASS.get(cell, ""):
            return None
        return f"the lowering builds {_RNN_CLASS.get(cell)}, not the fused class"

    return wired


def _leaky_wired() -> str | None:
    # LeakyRNN (cells.py) reaches the kernel through fused.fused_leaky_rnn; it is wired
    # when its forward calls that function.
    from archc.backends.torch.modules import cells

    if "fused_leaky_rnn" in inspect.getsource(cells.LeakyRNN.forward):
        return None
    return "LeakyRNN.forward does not call fused_leaky_rnn yet"


def _check_rnn(node: Node) -> str | None:
    a = node.attrs
    if a.get("bidirectional"):
        return "bidirectional (the kernel walks time forward only)"
    if a["hidden"] > MAX_HIDDEN:
        return (
            f"hidden size {a['hidden']} > {MAX_HIDDEN}: W_hh would not stay in registers "
            "across time steps (cuDNN / the torch loop is the better kernel there)"
        )
    return None


def _check_diag(node: Node) -> str | None:
    a = node.attrs
    if a["mode"] not in ("auto", "chunked"):
        # linear_scan runs the kernel (a chunked scan) in modes auto and chunked only; a
        # fixed sequential / associative mode is honoured.
        return f"mode {a['mode']!r}: linear_scan runs the Triton kernel in auto/chunked only"
    # SSMs scan (B, T, H, N) states; minGRU / minLSTM (B, T, H).
    state = a.get("state") if a["cell"] not in ("mingru", "minlstm") else None
    feats = a["hidden"] * (state or 1)
    if feats > _DIAG_MAX_FEATURES:
        return f"{feats} features exceed the grid's axis-1 limit"
    return None


def _check_matrix(node: Node) -> str | None:
    a = node.attrs
    if a["mode"] == "sequential":
        return "mode 'sequential' is the reference loop"
    _, dk, _ = matrix_dims(a)
    if dk > _MATRIX_MAX_DK:
        return f"dk={dk} > {_MATRIX_MAX_DK}: the key dimension is held in one register tile"
    return None


KERNELS: tuple[KernelRule, ...] = (
    KernelRule("rnn_cells.lstm", "rnn_cells", ("lstm",), _check_rnn, _rnn_class_wired("lstm")),
    KernelRule("rnn_cells.gru", "rnn_cells", ("gru",), _check_rnn, _rnn_class_wired("gru")),
    KernelRule(
        "rnn_cells.leaky", "rnn_cells", ("leaky_tanh", "leaky_relu"), _check_rnn, _leaky_wired
    ),
    KernelRule(
        "diag_scan",
        "diag_scan",
        ("mingru", "minlstm", "s4d_zoh", "s4d_bilinear", "selective"),
        _check_diag,
        _called_from("diag_scan", "archc.backends.torch.scans.linear"),
    ),
    KernelRule(
        "gla_scan",
        "gla_scan",
        ("gla",),
        _check_matrix,
        _called_from(
            "gla_scan", "archc.backends.torch.scans.matrix", "archc.backends.torch.modules.cells"
        ),
    ),
    KernelRule(
        "delta_scan",
        "delta_scan",
        ("delta",),
        _check_matrix,
        _called_from(
            "delta_scan", "archc.backends.torch.scans.matrix", "archc.backends.torch.modules.cells"
        ),
    ),
)

# Cells that have no Triton kernel, with what runs them instead.
_NO_KERNEL = {
    "rnn_tanh": "nn.RNN (cuDNN) runs it",
    "rnn_relu": "nn.RNN (cuDNN) runs it",
    "lru": "complex diagonal recurrence: the torch scan runs it",
    "diag_gru": "Newton mode's linear scans run the diag_scan kernel",
    "diag_rnn": "Newton mode's linear scans run the diag_scan kernel",
    "custom_diag": "Newton mode's linear scans run the diag_scan kernel",
    "block_rnn": "Newton mode's block scans run in torch ops",
    "diag_lstm": "Newton mode's 2 x 2 block scans run in torch ops",
    "aaren": "the associative scan runs in torch ops",
    "plstm": "the signed-transition chunked scan runs in torch ops",
    "custom": "the generated torch step runs it",
}


def rule_for(cell: str) -> KernelRule | None:
    """The kernel rule of scan ``cell`` (None if no kernel implements it)."""
    for rule in KERNELS:
        if cell in rule.cells:
            return rule
    return None


def _present(package: str) -> bool:
    return importlib.util.find_spec(f"{_PKG}.{package}") is not None


def _pointwise_wired() -> str | None:
    # The fused functions lower_fused.py generates call PointwiseHook.run on CUDA, which
    # pointwise_hook.py points at the kernel. lower_fused is imported through lower.py
    # (it builds on lower's Rule).
    importlib.import_module("archc.backends.torch.lower")
    if "PointwiseHook.run" not in _source("archc.backends.torch.lower_fused"):
        return "the fused_pointwise lowering does not call PointwiseHook yet"
    return _called_from("pointwise", "archc.backends.torch.modules.pointwise_hook")()


# fused_pointwise nodes (fuse-pointwise) run a Triton kernel generated per program.
POINTWISE = KernelRule("pointwise", "pointwise", (), lambda node: None, _pointwise_wired)


def kernel_name(node: Node) -> str | None:
    """The name of the kernel rule covering ``node`` (None if none does)."""
    if node.op == "fused_pointwise":
        return POINTWISE.name
    if node.op == "scan":
        rule = rule_for(node.attrs["cell"])
        return rule.name if rule else None
    return None


def _can_lower_pointwise(node: Node, dev: str) -> tuple[bool, str]:
    # Run-time checks (equal dtypes and shapes) stay with pointwise/op.py's can_lower.
    if dev != "cuda":
        return False, f"device is {dev}, the generated pointwise kernels need CUDA"
    if not _present(POINTWISE.package):
        return False, "kernel pointwise is not installed (backends/triton/pointwise)"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    why = POINTWISE.wired()
    return (False, why) if why else (True, "ok")


def can_lower(node: Node, device: str | object) -> tuple[bool, str]:
    """Whether a Triton kernel runs IR ``node`` on ``device`` ("cuda", "cpu", a
    torch.device); returns (ok, reason), reason "ok" or why not."""
    dev = str(getattr(device, "type", device)).split(":")[0]
    if node.op == "fused_pointwise":
        return _can_lower_pointwise(node, dev)
    if node.op != "scan":
        return False, f"op {node.op!r} has no kernel rule (only scans and fused_pointwise do)"
    cell = node.attrs["cell"]
    rule = rule_for(cell)
    if rule is None:
        return False, f"no Triton kernel for cell {cell!r}" + (
            f"; {_NO_KERNEL[cell]}" if cell in _NO_KERNEL else ""
        )
    if dev != "cuda":
        return False, f"device is {dev}, the kernels need CUDA"
    if not _present(rule.package):
        return False, f"kernel {rule.name} is not installed (backends/triton/{rule.package})"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    why = rule.check(node) or rule.wired()
    return (False, why) if why else (True, "ok")


def assign_kernels(graph: Graph, device: str | object) -> dict[str, tuple[str | None, str]]:
    """Every scan and fused_pointwise node of ``graph`` (regions included) by path ->
    (kernel name or None, reason): "ok" when the kernel runs it, else why the torch
    path does."""
    out: dict[str, tuple[str | None, str]] = {}
    for node in graph.walk():
        if node.op not in ("scan", "fused_pointwise"):
            continue
        ok, why = can_lower(node, device)
        out[node.path] = (kernel_name(node) if ok else None, why)
    return out


def format_assignments(graph: Graph, device: str | object) -> list[str]:
    """Report lines: one per scan node, 'path  cell  kernel-or-torch  reason'."""
    rows = assign_kernels(graph, device)
    cells = {
        n.path: n.attrs["cell"] if n.op == "scan" else n.op
        for n in graph.walk()
        if n.op in ("scan", "fused_pointwise")
    }
    if not rows:
        return [f"kernels on {device}: no scan nodes"]
    table = [(p, cells[p], k or "torch", why) for p, (k, why) in rows.items()]
    w = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [f"kernels on {device}:"]
    for p, c, k, why in table:
        lines.append(f"  {p:<{w[0]}}  {c:<{w[1]}}  {k:<{w[2]}}  {why}")
    return lines
