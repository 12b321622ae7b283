"""`make gpu-check` (`python -m benchmarks.gpu_check`): prove the GPU path on a GPU.

Runs every test marked ``cuda`` (pytest, in a subprocess), then the GPU benchmarks
(``benchmarks/bench_gpu.py``), and writes

* ``benchmarks/results/gpu-<date>.json``: the device, torch and CUDA versions, the driver,
  each test's outcome and every benchmark row;
* ``docs/gpu.md``: the same as a summary a person reads.

Without a CUDA device it says so, runs nothing and writes nothing (exit 0). Exit 1 when a
test failed or a benchmark raised.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = "<!-- notes below this line are written by hand and kept when gpu_check rewrites the page -->"


def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_cores": os.cpu_count(), "device": None, "capability": None, "memory_gib": None, "driver": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def run_tests(extra: list[str]) -> dict:
    """pytest -m cuda over the whole tests folder; outcome per test from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "cuda.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs",
               f"--junitxml={xml}", "tests", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        sys.stdout.write(proc.stdout[-20000:])
        sys.stderr.write(proc.stderr[-5000:])
        tests = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                outcome, message = "passed", ""
                for kind in ("failure", "error", "skipped"):
                    el = case.find(kind)
                    if el is not None:
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                        message = (el.get("message") or "")[:500]
                tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                              "seconds": float(case.get("time") or 0), "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"command": " ".join(cmd[2:]), "exit": proc.returncode, "seconds": round(seconds, 1),
            "counts": counts, "tests": tests}


def run_benchmarks() -> list[dict]:
    from benchmarks import bench_gpu

    return bench_gpu.run()


def markdown(doc: dict) -> str:
    d, t = doc["machine"], doc["tests"]
    lines = ["# The GPU path, measured on a GPU", "",
             f"Written by `make gpu-check` (`python -m benchmarks.gpu_check`) on {doc['date']}; the full record "
             f"is `{doc['file']}`. Re-run it on any machine with a CUDA GPU.", "",
             f"**Machine:** {d['device']} (compute capability {d['capability']}, {d['memory_gib']} GiB), driver "
             f"{d['driver']}, torch {d['torch']} with CUDA {d['cuda']}, Python {d['python']}, "
             f"{d['cpu_cores']} CPU cores.",
             "", "## Tests marked `cuda`", "",
             f"`{t['command']}`: " + ", ".join(f"{v} {k}" for k, v in t["counts"].items() if v)
             + f" in {t['seconds']:.0f} s.", ""]
    bad = [x for x in t["tests"] if x["outcome"] in ("failed", "error")]
    if bad:
        lines += ["Failures:", ""] + [f"- `{x['test']}`: {x['message']}" for x in bad] + [""]
    skipped = [x for x in t["tests"] if x["outcome"] == "skipped"]
    if skipped:
        lines += ["Skipped:", ""] + [f"- `{x['test']}`: {x['message']}" for x in skipped] + [""]
    lines += ["## GPU benchmarks", "",
              "Times read after `torch.cuda.synchronize`; latency from CUDA events; every ratio against a baseline "
              "run in the same process on the same GPU.", "",
              "| benchmark | value | unit | target | ok | detail |", "| --- | --- | --- | --- | --- | --- |"]
    for r in doc["benchmarks"]:
        v = r["value"]
        vs = "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append(f"| {r['name']} | {vs} | {r['unit']} | {r['target']} | {'yes' if r['ok'] else 'NO'} | "
                     f"{str(r.get('detail', '')).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON record")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "gpu.md"), help="the summary to write")
    ap.add_argument("--no-bench", action="store_true", help="run the cuda tests only")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments (one string)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device on this machine: the cuda tests skip here and there is nothing to measure; "
              "run `make gpu-check` on a machine with an NVIDIA GPU")
        return 0
    os.environ.setdefault("PRUNESCOPE_HOME", tempfile.mkdtemp(prefix="prunescope-gpu-home-"))
    info = device_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    tests = run_tests(args.pytest_args.split())
    print(f"cuda tests: {tests['counts']} in {tests['seconds']} s", flush=True)
    rows = [] if args.no_bench else run_benchmarks()
    now = dt.datetime.now()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-{now:%Y%m%d-%H%M%S}.json"
    doc = {"date": f"{now:%Y-%m-%d %H:%M}", "file": os.path.relpath(path, ROOT), "machine": info, "tests": tests,
           "benchmarks": rows}
    path.write_text(json.dumps(doc, indent=2, default=str))
    old = Path(args.doc).read_text() if Path(args.doc).exists() else ""
    kept = old[old.index(NOTES):] if NOTES in old else NOTES + "\n"
    Path(args.doc).write_text(markdown(doc) + "\n" + kept)
    for r in rows:
        v = r["value"]
        print(f"  {r['name']}: {'–' if v is None else (f'{v:.3g}' if isinstance(v, float) else v)} {r['unit']} "
              f"[{'ok' if r['ok'] else 'NO'}] {r.get('detail', '')}")
    print(f"wrote {path} and {args.doc}")
    failed = tests["counts"]["failed"] + tests["counts"]["error"] + (tests["exit"] not in (0, 5))
    broken = any(str(r.get("detail", "")).startswith("failed:") for r in rows)
    return 1 if failed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
