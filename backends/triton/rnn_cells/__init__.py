"""Fused sequential RNN cells (LSTM, GRU, leaky tau-RNN): W_hh stays on chip across time.

naive.py is the pure-torch reference, kernel.py the Triton kernels, op.py the autograd
ops (``lstm_sequence``, ``gru_sequence``, ``leaky_sequence``, torch.library custom ops
underneath) and ``can_lower``. Nothing imports triton here.
"""

# Largest hidden size the kernels keep W_hh on chip for (see op.py); here so the kernel
# rules (backends/triton/rules.py) can read it without importing triton.
MAX_HIDDEN = 64
