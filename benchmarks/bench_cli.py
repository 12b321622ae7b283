"""Command-line start-up: ``prunescope --help`` and ``prunescope models --json`` against
``python -c "import torch"``, each a fresh process, interleaved, median of 5.

Targets (issue 11): ``--help`` under 1 s and ``models --json`` under 3 s on a machine
where importing torch takes about 4 s, i.e. at most 0.25x and 0.75x an import of torch.
Neither command imports torch at all; the ratio shows what start-up costs besides.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import row

RUNS = 5
_SCRIPT = Path(sys.executable).with_name("prunescope")  # the installed console script
_CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "core"]
CASES = {
    "import torch": [sys.executable, "-c", "import torch"],
    "prunescope --help": _CLI + ["--help"],
    "prunescope models --json": _CLI + ["models", "--json"],
}


def _once(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    t = time.perf_counter() - t0
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}, stderr {done.stderr.strip()[:200]!r}")
    return t


def run() -> list[dict]:
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(RUNS):  # interleaved: a busy spell hits every case alike
        for name, cmd in CASES.items():
            times[name].append(_once(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["import torch"]
    rows = []
    for name, target in (("prunescope --help", 0.25), ("prunescope models --json", 0.75)):
        ratio = med[name] / base
        rows.append(row(f"{name} / import torch", round(ratio, 3), "x", f"<= {target}", ratio <= target,
                        f"{med[name]:.2f} s vs import torch {base:.2f} s (median of {RUNS}, no stderr)"))
    return rows
