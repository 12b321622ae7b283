"""Freed memory kept for reuse (``core.ground.memory``) against malloc as it is: the same
evaluations of digits_resnet (the quick subset, 256 examples; twelve weight-level plans, each
applied and measured as a slider move does) in child processes, alternately with
``PRUNESCOPE_KEEP_MEMORY`` on and off, since the allocator's setting is process-wide and
cannot be undone within one process. Rows: wall time (kept / as it is, the medians of two
runs each), minor page faults and peak resident memory."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import row

ROOT = Path(__file__).resolve().parent.parent
RUNS = 2  # per setting, alternated

CHILD = """
import json, resource, time
import benchmarks  # an entry point: keeps freed memory unless PRUNESCOPE_KEEP_MEMORY=0
import torch
from core.ground.memory import keep_freed_memory
from core.plan import apply
from core.prune import Prune
from core.workspace import Workspace

ws = Workspace("digits_resnet", "cpu")
ws.base_metrics(latency=False)
def plans():
    for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99):
        yield ws.plan.then(Prune(criterion="l1", granularity="weight", sparsity=s))
ws.evaluator.evaluate(apply(ws.plan.then(Prune(sparsity=0.05)), ws.base, ctx=ws.ctx), latency=False)  # warm
f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for p in plans():
    ws.evaluator.evaluate(apply(p, ws.base, ctx=ws.ctx), latency=False)
seconds = time.perf_counter() - t0
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
# VmHWM, this process's own peak (ru_maxrss keeps the parent's from the fork)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"kept": keep_freed_memory(), "seconds": seconds, "faults": faults, "peak_mib": hwm / 1024,
                  "threads": torch.get_num_threads()}))
"""


def _child(keep: str) -> dict:
    env = {**os.environ, "PRUNESCOPE_KEEP_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    if not sys.platform.startswith("linux"):
        return [row("evaluations, freed memory kept / handed back", None, "x", "report", True,
                    "skipped: glibc's malloc only")]
    got: dict[str, list[dict]] = {"1": [], "0": []}
    for _ in range(RUNS):
        for keep in ("1", "0"):
            got[keep].append(_child(keep))
    if not got["1"][0]["kept"]:
        return [row("evaluations, freed memory kept / handed back", None, "x", "report", True,
                    "skipped: this C library has no mallopt")]
    fields = ("seconds", "faults", "peak_mib")
    med = {k: {f: statistics.median(r[f] for r in v) for f in fields} for k, v in got.items()}
    kept, free = med["1"], med["0"]
    ratio = kept["seconds"] / free["seconds"]
    what = (f"digits_resnet, 12 weight-level plans applied and evaluated on the quick subset (256 examples), "
            f"{got['1'][0]['threads']} threads, child processes alternated, medians of {RUNS}")
    return [
        row("evaluations, freed memory kept / handed back (digits_resnet)", round(ratio, 3), "x", "< 1", ratio < 1,
            f"{what}: kept {kept['seconds']:.2f} s, handed back {free['seconds']:.2f} s"),
        row("page faults, freed memory kept (digits_resnet)", int(kept["faults"]), "faults", "report", True,
            f"minor page faults over the 12 evaluations; handed back: {int(free['faults']):,}"),
        row("peak memory, freed memory kept / handed back (digits_resnet)",
            round(kept["peak_mib"] / free["peak_mib"], 3), "x", "report", True,
            f"peak resident memory of the process: kept {kept['peak_mib']:.0f} MiB, handed back "
            f"{free['peak_mib']:.0f} MiB"),
    ]
