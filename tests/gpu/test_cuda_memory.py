"""Titans / ATLAS memory models on CUDA agree with the same models on CPU, forward and
parameter gradients (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archc

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize("name", ["titans-mac.yaml", "titans-mag.yaml", "atlas.yaml"])
def test_memory_model_cuda_matches_cpu(name: str) -> None:
    cpu = archc.compile(SPECS / name, seed=0).double()
    gpu = archc.compile(SPECS / name, seed=0).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randint(0, 64, (2, 45))
    y_cpu, y_gpu = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-9, atol=1e-9)
    y_cpu.square().mean().backward()
    y_gpu.square().mean().backward()
    for (n, p), q in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-7, atol=1e-9, msg=n)
