"""Freed memory kept for reuse (core.ground.memory): repeated large allocations, as every
evaluation makes, stop faulting fresh pages in from the kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.ground.memory import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

PROBE = """
import json, resource, sys, torch
from core.ground.memory import keep_freed_memory
kept = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def passes(n):
    for _ in range(n):
        t = torch.empty(16 << 20)  # 64 MiB, as a large activation
        t.fill_(1.0)
        del t
passes(10)  # the heap grows until freed blocks are large enough to reuse (aligned requests are a little larger)
f0 = faults()
passes(10)
print(json.dumps({"kept": kept, "faults": faults() - f0}))
"""


def _probe(keep: str) -> dict:
    env = {**os.environ, "PRUNESCOPE_KEEP_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults_and_the_opt_out_leaves_malloc_as_it_is():
    kept, default = _probe("1"), _probe("0")
    assert kept["kept"] is True and default["kept"] is False
    # ten more 64 MiB tensors, each freed before the next: 163,840 fresh 4 KiB pages without reuse
    assert kept["faults"] < 2_000, kept
    assert default["faults"] > 5 * kept["faults"], (kept, default)


def test_the_opt_out_is_read_on_every_call(monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_KEEP_MEMORY", "0")
    assert keep_freed_memory() is False
