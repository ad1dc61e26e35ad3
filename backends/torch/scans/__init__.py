"""Scan engines: diagonal linear recurrences (linear.py), matrix-state recurrences
(matrix.py) and the Newton solver for nonlinear ones (newton.py)."""

from archc.backends.torch.scans.linear import linear_scan, linear_scan_modes
from archc.backends.torch.scans.matrix import delta_scan, gla_scan, matrix_scan_modes

__all__ = [
    "delta_scan",
    "gla_scan",
    "linear_scan",
    "linear_scan_modes",
    "matrix_scan_modes",
]
