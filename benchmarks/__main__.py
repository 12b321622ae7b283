"""`python -m benchmarks [--only NAME ...] [--quick]`: speed and memory figures.

Collects every ``benchmarks/bench_*.py`` module's ``run() -> list[dict]`` (rows with
``name``, ``value``, ``unit``, ``target``, ``ok``, ``detail``), prints one table with
the machine described, and writes JSON to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def modules(only: list[str] | None) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--only", nargs="*", help="run only modules whose name contains one of these")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON results")
    args = ap.parse_args(argv)
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    for name in modules(args.only):
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
            got = mod.run()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others (its row says why)
            got = [{"name": name, "value": None, "unit": "", "target": "", "ok": False,
                    "detail": f"failed: {exc.__class__.__name__}: {exc}"}]
        for r in got:
            r.setdefault("module", name)
        rows += got
        print(f"  {name}: {len(got)} row(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    w = max((len(r["name"]) for r in rows), default=10)
    print(f"\n{'benchmark':<{w}}  {'value':>12}  {'unit':<8}  {'target':<14}  ok   detail")
    print("-" * (w + 60))
    for r in rows:
        v = r["value"]
        vs = "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
        print(f"{r['name']:<{w}}  {vs:>12}  {r['unit']:<8}  {str(r['target']):<14}  "
              f"{'–' if v is None and r['ok'] else 'yes' if r['ok'] else 'NO ':<4} {r.get('detail', '')}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    doc = {"time": stamp, "machine": info, "rows": rows}
    for f in (out / f"bench-{stamp}.json", out / "latest.json"):
        f.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nwrote {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
