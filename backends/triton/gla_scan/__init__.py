"""Chunked gated linear attention (GLA) as Triton kernels (forward and backward)."""
