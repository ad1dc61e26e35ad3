"""Compiled modules on CUDA agree with the same modules on CPU (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

import archc

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SPECS = {
    "gpt": """
model: g
vocab: 97
d_model: 64
layers:
  - embed
  - posenc: learned
  - residual: [{norm: layer}, {attention: {heads: 4, pos: rope, window: 9}}]
  - residual: [{norm: rms}, {mlp: {act: swiglu}}]
  - residual: [{conv1d: {kernel: 4, groups: depthwise, dilation: 2}}]
  - norm: rms
  - head: {tied: true}
""",
    "lstm": """
model: l
vocab: 97
d_model: 64
layers: [embed, {lstm: {hidden: 48, layers: 2}}, {gru: {hidden: 64}}, head]
""",
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cuda_matches_cpu(name: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = archc.compile(SPECS[name])
    x = torch.randint(0, 97, (3, 67))
    ref = model(x)
    ref.square().mean().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    model.cuda()
    out = model(x.cuda())
    out.square().mean().backward()
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad.cpu(), grads[k], rtol=1e-3, atol=1e-5, msg=k)
