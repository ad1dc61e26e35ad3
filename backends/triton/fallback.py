"""Log a Triton kernel's fallback to torch: once per (kernel, reason), never silent."""

from __future__ import annotations

import logging

__all__ = ["log_fallback", "logged_fallbacks"]

_LOG = logging.getLogger("archc.backends.triton")
_SEEN: set[tuple[str, str]] = set()


def log_fallback(kernel: str, reason: str) -> bool:
    """Warn that ``kernel`` falls back to torch because of ``reason``.

    Logged once per distinct (kernel, reason) pair so a training loop does not spam
    the log, yet every new cause is seen. Returns True when this call logged.
    """
    key = (kernel, reason)
    if key in _SEEN:
        return False
    _SEEN.add(key)
    _LOG.warning("archc: Triton kernel %r not used, falling back to torch: %s", kernel, reason)
    return True


def logged_fallbacks() -> frozenset[tuple[str, str]]:
    """The (kernel, reason) pairs logged so far in this process (for tests and reports)."""
    return frozenset(_SEEN)
