"""Triton kernels, one folder per fused kernel (naive.py reference, kernel.py, op.py).

Nothing here imports triton at package import time: kernels are imported by the rules
that use them, after ``can_lower`` said yes.
"""
