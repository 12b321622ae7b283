"""The zoo's process helpers (``benchmarks/zoo.py``): resident memory read from /proc, its peak
reset per stage, and the limits a child process starts under."""
from __future__ import annotations

import os
import resource
from pathlib import Path


def _status_kb(key: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> None:
    """Reset this process's peak resident size (VmHWM), so each stage reports its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _limit(mem_gb: float):
    def set_limits():
        # The address-space cap is a backstop above the resident cap the parent watches:
        # torch and onnxruntime reserve a few GB of address space they never touch.
        soft = int((mem_gb + 6) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        os.setsid()
    return set_limits
