"""Every ARCHC_* environment variable, typed, in one place."""

from __future__ import annotations

import os


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def debug() -> bool:
    """ARCHC_DEBUG=1: re-raise diagnostics and internal errors with their traceback."""
    return _flag("ARCHC_DEBUG")


def verify_each_pass() -> bool:
    """ARCHC_VERIFY=1: run the IR verifier after every pass."""
    return _flag("ARCHC_VERIFY")


def max_spec_bytes() -> int:
    """ARCHC_MAX_SPEC_BYTES: largest spec file read (default 1 MiB)."""
    return _int("ARCHC_MAX_SPEC_BYTES", 1 << 20)


def max_spec_depth() -> int:
    """ARCHC_MAX_SPEC_DEPTH: deepest nesting of a spec's data (default 100)."""
    return _int("ARCHC_MAX_SPEC_DEPTH", 100)


def max_spec_nodes() -> int:
    """ARCHC_MAX_SPEC_NODES: most values in a spec after YAML alias expansion (default 200k)."""
    return _int("ARCHC_MAX_SPEC_NODES", 200_000)


def max_ir_nodes() -> int:
    """ARCHC_MAX_IR_NODES: most IR nodes a spec may unroll into (default 200k)."""
    return _int("ARCHC_MAX_IR_NODES", 200_000)


def inject_nan_at_step() -> int:
    """ARCHC_INJECT_NAN_AT: testing aid; the training loss at this step (0-based) is NaN.

    Lets tests exercise the divergence path (stop, keep the last good checkpoint)
    without depending on an optimizer actually diverging. -1 (default): off.
    """
    return _int("ARCHC_INJECT_NAN_AT", -1)
