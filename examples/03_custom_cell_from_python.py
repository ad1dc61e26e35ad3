"""Extend archc with a recurrent cell registered from Python, then use it in a spec.

python examples/03_custom_cell_from_python.py

`archc.register_cell` turns a Python function into a spec component: the function
receives the component's widths and returns the cell as expressions (the language of
the `cell:` component). Here a peephole LSTM (Gers & Schmidhuber 2000: the gates also
read the cell state c through a per-unit weight, `diag(c)`) becomes `peephole:`; the
spec uses it like any built-in layer, with streaming state, `archc compile --emit torch`
and the other checks of a `cell:` written in the spec. A few training steps end it
(`archc.train` in the process that registered the cell trains it for real).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import archc
from archc.backends.torch.emit import emit_torch


def peephole(hidden: int) -> dict:
    """A peephole LSTM of width `hidden`."""
    return {
        "state": {"h": hidden, "c": hidden},
        "let": {
            "i": f"sigmoid(linear(x, {hidden}) + linear(h, {hidden}, bias=false) + diag(c))",
            "f": f"sigmoid(linear(x, {hidden}) + linear(h, {hidden}, bias=false) + diag(c))",
            "g": f"tanh(linear(x, {hidden}) + linear(h, {hidden}, bias=false))",
            "c2": "f * c + i * g",
            "o": f"sigmoid(linear(x, {hidden}) + linear(h, {hidden}, bias=false) + diag(c2))",
        },
        "update": {"c": "c2", "h": "o * tanh(c2)"},
        "output": "h",
    }


SPEC = """
model: peephole-parity
vocab: 2
d_model: 16
layers:
  - embed
  - peephole: 24          # the registered cell; shorthand for {hidden: 24}
  - head: {out: 2}
train:
  task: {name: parity, n: 3}
  steps: 20
  batch_size: 32
  seq_len: 24
  lr: 2e-2
  warmup: 20
  eval_interval: 0
"""


def main() -> None:
    archc.register_cell("peephole", peephole, hidden=32)
    model = archc.compile(SPEC)
    print("parameters:", [f"{k} {tuple(v.shape)}" for k, v in model.named_parameters()][:4])

    # Streaming: two halves with the carried state equal one pass over the whole.
    x = torch.randint(0, 2, (2, 12))
    whole = model(x)
    first, state = model(x[:, :6], return_state=True)
    second, _ = model(x[:, 6:], state=state, return_state=True)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    print("streaming in two halves equals the whole sequence")

    # The standalone module (torch only) holds the same cell.
    source = emit_torch(archc.to_graph(SPEC), "peephole")
    print("standalone source:", len(source.splitlines()), "lines")

    summary = archc.train(archc.load(SPEC), Path(tempfile.mkdtemp()) / "run", show_progress=False)
    print(summary.line())


if __name__ == "__main__":
    main()
