"""Chunked gated linear attention (GLA) as a Triton kernel (forward; backward via torch)."""
