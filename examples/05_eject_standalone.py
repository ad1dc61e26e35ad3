"""Emit a standalone model.py (torch only) and check it matches the compiled module.

python examples/02_emit_standalone.py [OUT_DIR]
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

import archc
from archc.backends.torch.emit import emit_torch

SPEC = """
model: example-lstm
vocab: 128
d_model: 32
layers: [embed, {lstm: {hidden: 48, layers: 2}}, {linear: {out: 32}}, head]
"""


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = out_dir / "model.py"
    path.write_text(emit_torch(archc.to_graph(SPEC), "example"))
    spec = importlib.util.spec_from_file_location("emitted_model", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    compiled = archc.compile(SPEC)
    standalone = module.Model()
    standalone.load_state_dict(compiled.state_dict())
    x = torch.randint(0, 128, (2, 20))
    diff = (compiled(x) - standalone(x)).abs().max().item()
    print(f"wrote {path}; max |compiled - standalone| = {diff:.1e}")
    assert diff == 0.0


if __name__ == "__main__":
    main()
