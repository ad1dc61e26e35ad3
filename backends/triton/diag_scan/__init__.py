"""Diagonal linear scan h_t = a_t * h_{t-1} + b_t as a Triton kernel (forward and backward)."""
