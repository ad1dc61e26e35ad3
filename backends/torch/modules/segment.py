"""Segment recurrence: the `segment` op's module (RMT memory tokens, HMT recall, a
Transformer-XL style KV window).

Uses math/torch/nn/F only: the standalone emitter copies this source into model.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends.torch.modules.cells import DeltaNet, _heads


def detach_carry(value: object) -> object:
    """`value` with every tensor in it (nested tuples/lists/dicts) detached."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(detach_carry(v) for v in value)
    if isinstance(value, dict):
        return {k: detach_carry(v) for k, v in value.items()}
    return value


def window_kv(value: object, window: int) -> object:
    """An attention cache (k, v), each (B, KV, C, hd), cut to its last `window` positions;
    other state entries (conv inputs, recurrent carries) pass unchanged."""
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in value)
    ):
        k, v = value
        return k[:, :, max(0, k.shape[2] - window) :], v[:, :, max(0, v.shape[2] - window) :]
    return value


class SegmentRecurrence(nn.Module):
    """Runs a body on segments of `length` tokens of (B, T, D), carrying state between them.

    carry "memory" (Recurrent Memory Transformer): segment s runs the body on
    [m_s ; x_s ; m_s] (B, n + k + n, D); its outputs at the n write slots are m_{s+1},
    its outputs at the k token slots the result; m_0 is the learned `memory` (n, D). A
    causal body keeps the read memory a function of earlier segments only.

    recall N > 0 (HMT memory recall): a FIFO holds the last N written memories; the read
    memory becomes m_s + softmax(q K^T / sqrt(D)) V with q = mean(x_{s-1}) W_q^T (a
    summary of the previous segment: the current one's tokens would leak the future),
    K = F W_k^T and V = F over the FIFO's memory tokens F.

    carry "kv_window" (Transformer-XL style): the body runs in its incremental form, so
    its attention layers also see the cached keys/values of the last `window` tokens of
    the previous segments (other carries, e.g. conv inputs, continue as in streaming).

    carry "fast_weights": per head a (D/h, D/h) matrix S, zero at the start. Segment s
    reads it before the body runs: the body sees x + W_o concat_heads(q S_s) with q the
    L2-normalised W_q x per head; after the segment the body's outputs write it with
    DeltaNet's rule token by token, S <- S + beta k^T (v - k S) (k normalised, beta =
    sigmoid(W_beta h + b)), giving S_{s+1}. The cell's weights live in `fast`.

    sensory j > 0 (HMT sensory memory, memory carry): the last j tokens of the previous
    segment's input are read too, [m_s ; tail_{s-1} ; x_s ; m_s], and their outputs
    dropped, so a segment's first tokens see the end of the one before.

    bptt d: the carry is detached before segment s whenever s % (d + 1) == 0, so the
    loss of a segment backpropagates through at most d segment transitions (truncated
    BPTT in windows of d + 1 segments); None keeps the whole chain.
    """

    def __init__(
        self,
        dim: int,
        length: int,
        carry: str,
        mem: int = 0,
        window: int | None = None,
        bptt: int | None = None,
        recall: int = 0,
        heads: int = 0,
        sensory: int = 0,
    ) -> None:
        super().__init__()
        self.dim, self.length, self.carry = dim, length, carry
        self.mem, self.window, self.bptt, self.recall = mem, window, bptt, recall
        self.sensory = sensory
        if carry == "memory":
            self.memory = nn.Parameter(torch.empty(mem, dim))
        if carry == "fast_weights":
            self.fast = DeltaNet(dim, heads)
        if recall:
            self.recall_q = nn.Parameter(torch.empty(dim, dim))
            self.recall_k = nn.Parameter(torch.empty(dim, dim))

    def cut(self, s: int) -> bool:
        """Whether the carry entering segment s is detached (truncated BPTT)."""
        return s > 0 and self.bptt is not None and s % (self.bptt + 1) == 0

    def recalled(self, summary: torch.Tensor, fifo: list[torch.Tensor]) -> torch.Tensor:
        """HMT recall: summary (B, D) attends over the FIFO's tokens -> (B, D)."""
        bank = torch.cat(fifo, dim=1)  # (B, N * n, D)
        q = summary @ self.recall_q.t()
        keys = bank @ self.recall_k.t()
        w = torch.softmax((keys @ q[:, :, None]).squeeze(-1) / math.sqrt(self.dim), dim=-1)
        return (w[:, None, :] @ bank).squeeze(1)

    def forward(self, x: torch.Tensor, body) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); body(h, inc, pos, state, new_state) runs the region."""
        return self.step(x, None, body)[0]

    def step(self, x: torch.Tensor, state: dict | None, body) -> tuple[torch.Tensor, dict]:
        """Continue a sequence: x (B, t, D) follows `state` (None: the sequence starts).

        The state holds the carry (memory, FIFO and summary; or the KV window), the
        number of segments completed and the inputs of the current, unfinished segment.
        Those are rerun with the new tokens (at most length - 1 of them): a causal body
        gives a partial segment's tokens the outputs they get in the whole sequence.
        Returns (B, t, D) and the state after x.
        """
        if state is None:
            state = {"s": 0, "buf": x[:, :0], "carry": self.initial(x)}
        carry, s = state["carry"], state["s"]
        seq = torch.cat([state["buf"], x], dim=1)
        outs = []
        start = 0
        while seq.shape[1] - start >= self.length:
            if self.cut(s):
                carry = detach_carry(carry)
            y, carry = self.segment(seq[:, start : start + self.length], carry, s, body, True)
            outs.append(y)
            start, s = start + self.length, s + 1
        buf = seq[:, start:].clone()  # a view would keep the whole chunk alive
        if buf.shape[1]:
            outs.append(self.segment(buf, carry, s, body, False)[0])
        y = torch.cat(outs, dim=1)[:, state["buf"].shape[1] :]
        return y, {"s": s, "buf": buf, "carry": carry}

    def initial(self, x: torch.Tensor) -> dict:
        """The carry before the first segment."""
        if self.carry == "kv_window":
            return {}
        if self.carry == "fast_weights":
            h, d = self.fast.heads, self.dim // self.fast.heads
            return {"S": x.new_zeros(x.shape[0], h, d, d)}
        mem = self.memory.to(x.dtype)[None].expand(x.shape[0], self.mem, self.dim)
        return {"mem": mem, "fifo": [], "summary": None, "tail": x[:, :0]}

    def segment(
        self,
        seg: torch.Tensor,
        carry: dict,
        s: int,
        body,
        complete: bool,
    ) -> tuple[torch.Tensor, dict]:
        """Run the body on segment s (B, k, D); `complete`: also produce the next carry."""
        if self.carry == "kv_window":
            written: dict[str, object] = {}
            y = body(seg, True, s * self.length, dict(carry), written)
            return y, {k: window_kv(v, self.window) for k, v in written.items()}
        if self.carry == "fast_weights":
            S = carry["S"]
            q = F.normalize(_heads(F.linear(seg, self.fast.weight_q), self.fast.heads), dim=-1)
            read = F.linear((q @ S).transpose(1, 2).flatten(2), self.fast.weight_o)
            y = body(seg + read, False, 0, None, None)
            return y, {"S": self.fast(y, S)[1] if complete else S}
        n, k, mem, fifo = self.mem, seg.shape[1], carry["mem"], carry["fifo"]
        tail = carry["tail"]  # (B, j, D): the sensory tokens, j = 0 before segment 1
        read = mem
        if self.recall and fifo:
            read = mem + self.recalled(carry["summary"], fifo)[:, None, :]
        front = n + tail.shape[1]
        if not complete:  # the write slots come after every token of a causal body
            h = body(torch.cat([read, tail, seg], dim=1), False, 0, None, None)
            return h[:, front:], carry
        h = body(torch.cat([read, tail, seg, read], dim=1), False, 0, None, None)
        new = h[:, front + k :].clone()  # own storage: the carry keeps n tokens, not k + 2n
        nxt = {
            "mem": new,
            "fifo": [*fifo, new][-self.recall :] if self.recall else [],
            "summary": seg.mean(dim=1) if self.recall else None,
            "tail": seg[:, k - self.sensory :] if self.sensory else seg[:, :0],
        }
        return h[:, front : front + k], nxt
