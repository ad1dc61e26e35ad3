"""Fused sequential RNN cells (LSTM, GRU): W_hh stays on chip across time steps.

naive.py is the pure-torch reference, kernel.py the Triton kernels, op.py the autograd
ops (``lstm_sequence``, ``gru_sequence``) and ``can_lower``. Nothing imports triton here.
"""
