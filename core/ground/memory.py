"""Keep freed memory in the process, so that evaluations stop paying the kernel for it.

Evaluating a model allocates the same large activation tensors again and again. By
default glibc's malloc serves every block over its mmap threshold (128 KiB, growing to at
most 32 MiB) with a fresh ``mmap`` and hands it back to the kernel when freed; the next
evaluation's first touch of each 4 KiB page is a page fault that zero-fills it. On
digits_resnet's quick subset (256 examples) a full weight-level sweep made 11 M page faults
and the naive apply-and-evaluate loop 25 M, as much system time as compute. With mmap off
and a high trim threshold the heap keeps what was freed and the next pass reuses it: back
to back on this 2-core machine the naive loop took 39.4 s before and 25.5 s after, the sweep
19.1 s and 13.9 s, with no system time left (``python -m benchmarks --only memory`` measures
twelve evaluations both ways). On a torchvision ResNet-50 at 224 px (quick subset of 64,
twelve plans evaluated): 19.9 s instead of 28.5 s, 0.6 M page faults instead of 10.9 M.

The cost: the process keeps its peak heap (free memory at the heap's top beyond ``TRIM`` is
handed back) and what fragmentation holds: aligned requests are a little larger than the
blocks they free, so a loop of 64 MiB blocks grows the heap by about six of them before it
reuses them. ResNet-50 above peaked at 3,390 MiB instead of 3,213 MiB and stayed there
(without it the process fell back to 2,631 MiB between evaluations).

Entry points call :func:`keep_freed_memory` (the app, the CLI, the benchmarks, Ray workers,
the test suite); a library import does not change the allocator of a person's process.
``PRUNESCOPE_KEEP_MEMORY=0`` leaves malloc as it is; elsewhere than glibc (macOS, Windows,
musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
TRIM = 1 << 30  # free memory at the heap's top beyond 1 GiB goes back to the kernel


@functools.cache
def _mallopt_set() -> bool:
    """Sets glibc's two parameters, once per process; False off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # no loadable C library (an unusual build): leave malloc alone
        return False
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):  # musl and others
        return False
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM) == 1


def keep_freed_memory() -> bool:
    """Make malloc keep freed memory for reuse (process-wide, idempotent). Returns whether
    the setting is in force: False off glibc or with ``PRUNESCOPE_KEEP_MEMORY=0``."""
    if os.environ.get("PRUNESCOPE_KEEP_MEMORY", "1") == "0":
        return False
    return _mallopt_set()


__all__ = ["keep_freed_memory", "TRIM"]
