"""What the CUDA tests share: the module mark, the device, and a check that work reached the GPU.

``PRUNESCOPE_CUDA_DRY_RUN=1`` runs these tests on the CPU with the GPU checks off: a way to
check the tests' own logic on a machine without a GPU before spending GPU time on them.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

DRY_RUN = os.environ.get("PRUNESCOPE_CUDA_DRY_RUN") == "1"
DEVICE = "cpu" if DRY_RUN else "cuda"
CUDA = [pytest.mark.cuda,
        pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN), reason="no CUDA device on this machine")]


def _allocations() -> int:
    return int(torch.cuda.memory_stats().get("allocation.all.allocated", 0))


@contextlib.contextmanager
def on_gpu(what: str, at_least: int = 1):
    """Fail unless the block allocated GPU memory at least ``at_least`` times: work that
    fell back to the CPU allocates nothing there."""
    if DRY_RUN:
        yield
        return
    torch.cuda.synchronize()
    before = _allocations()
    yield
    torch.cuda.synchronize()
    made = _allocations() - before
    assert made >= at_least, f"{what}: no work reached the GPU ({made} allocations there)"


def all_on_cuda(model: torch.nn.Module) -> bool:
    """Every parameter and buffer of ``model`` lives on the test device (CUDA)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return bool(tensors) and all(t.device.type == DEVICE for t in tensors)
