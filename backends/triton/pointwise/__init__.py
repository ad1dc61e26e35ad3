"""Generated pointwise kernels: one Triton kernel pair (forward, backward) per fused
program of the `fused_pointwise` op (archc/ir/ops_fused.py).

naive.py evaluates a program with torch ops (the reference and the fallback); gen.py
writes and imports the Triton source; op.py is the differentiable op and its
``can_lower``; dispatch.py is what the torch lowering calls (it imports triton lazily).
"""
