"""Chunked delta rule (DeltaNet) as Triton kernels (forward and backward)."""
