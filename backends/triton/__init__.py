"""Triton kernels, one folder per fused kernel (naive.py reference, kernel.py, op.py).

rules.py maps IR scan nodes to these kernels: ``can_lower(node, device)`` and
``assign_kernels(graph, device)`` say which kernel runs each node and why not.

Nothing here imports triton at package import time: kernels are imported by the rules
that use them, after ``can_lower`` said yes.
"""
