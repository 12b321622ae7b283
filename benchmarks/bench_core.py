"""Foundation benchmarks: live threshold updates, global threshold selection,
histograms, and peak memory over successive thresholds."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
from torch.nn.utils import prune as torch_prune

from benchmarks.common import MLP25M, live_pair, mlp, register_synthetic, row, timeit
from core.plan import ApplyContext
from core.prune import Prune
from core.prune.masks import prunable_layers, weight_prune
from core.viz.figures import weight_histogram_figure
from core.viz.histograms import weight_histograms
from core.workspace import Workspace

DEMOS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"]


def live_update(name: str) -> dict:
    """A threshold move -> new quick metrics, against one bare forward + one mask multiply."""
    ws = Workspace(name, "cpu", quick_size=256, latency_time=0.1)
    move, baseline, n = live_pair(ws)
    ours = timeit(move, repeat=7, warmup=1)
    base = timeit(baseline, repeat=7, warmup=1)
    ratio = ours / base
    ok = ratio <= 1.5 or (base < 0.010 and ours - base <= 0.005)
    return row(f"live update {name}", ratio, "x", "<=1.5x (or +5ms)", ok,
               f"ours {ours * 1e3:.1f} ms, baseline {base * 1e3:.1f} ms (forward of {n} + mask multiply)")


def global_threshold_25m() -> list[dict]:
    model = mlp(MLP25M)
    n = sum(p.numel() for p in model.parameters())
    warm_ctx = ApplyContext("bench")  # its memo keeps the score sample of `model` between calls

    def ours_cold():
        weight_prune(Prune(sparsity=0.7), model, ApplyContext("bench"))  # a fresh memo: score sample built

    cold = timeit(ours_cold, repeat=3, warmup=1)
    warm = timeit(lambda: weight_prune(Prune(sparsity=0.7), model, warm_ctx), repeat=3, warmup=1)
    ts = []
    import time
    for _ in range(2):
        m2 = copy.deepcopy(model)
        params = [(m, "weight") for m in prunable_layers(m2).values()]
        t0 = time.perf_counter()
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=0.7)
        ts.append(time.perf_counter() - t0)
        del m2, params
    ref = min(ts)
    return [row("global threshold+masks 25M (cold)", ref / cold, "x faster", ">=20x", ref / cold >= 20,
                f"ours {cold * 1e3:.0f} ms vs torch global_unstructured {ref * 1e3:.0f} ms, {n / 1e6:.1f} M params"),
            row("global threshold+masks 25M (warm)", ref / warm, "x faster", ">=20x", ref / warm >= 20,
                f"ours {warm * 1e3:.0f} ms (score sample cached)")]


def histograms_25m() -> list[dict]:
    model = mlp(MLP25M)
    layers = prunable_layers(model)
    ours = timeit(lambda: weight_histograms(model, bins=100), repeat=3)
    arrays = [m.weight.detach().numpy() for m in layers.values()]
    ref = timeit(lambda: [np.histogram(a, bins=100) for a in arrays], repeat=3)
    hists = weight_histograms(model, bins=100)
    big = max(hists, key=lambda k: hists[k].total)
    move = timeit(lambda: weight_histogram_figure(hists[big], 0.01 + np.random.rand() * 0.01), repeat=7)
    return [row("histograms 25M first pass", ours / ref, "x np", "<=1.5x", ours / ref <= 1.5,
                f"ours {ours * 1e3:.0f} ms vs np.histogram per layer {ref * 1e3:.0f} ms"),
            row("threshold move on cached bins", move * 1e3, "ms", "no recompute", True,
                "draws line + shading over cached bins; no weight histogram recomputed")]


_MEM_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from benchmarks.common import MLP100M, register_synthetic
    from core.plan import Plan
    from core.prune import Prune
    from core.workspace import Workspace

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    r0 = rss()
    name = register_synthetic("bench_mlp100m", MLP100M, n_test=64)
    ws = Workspace(name, "cpu", quick_size=16, latency_time=0.05, latency_batch=8)
    model_bytes = sum(p.numel() * p.element_size() for p in ws.base.parameters())
    ws.metrics()  # base figures (latency, size) measured once before the phase
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS counter
    r1 = rss()
    for i in range(20):
        ws.set_plan(Plan(name, (Prune(sparsity=0.05 + 0.045 * i),)))
        ws.metrics("quick", latency=False)
    peak = hwm()
    print(json.dumps({{"model_bytes": model_bytes, "peak": peak - r0, "start": r1 - r0}}))
""")


def peak_memory_100m() -> dict:
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", _MEM_SCRIPT.format(root=root)], capture_output=True,
                         text=True, timeout=1200)
    if out.returncode != 0:
        return row("peak memory 20 thresholds 100M", None, "x model", "<=3x", False,
                   "failed: " + out.stderr.strip().splitlines()[-1])
    d = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = d["peak"] / d["model_bytes"]
    return row("peak memory 20 thresholds 100M", ratio, "x model", "<=3x", ratio <= 3,
               f"peak {d['peak'] / 2**20:.0f} MiB over the process before the model; model "
               f"{d['model_bytes'] / 2**20:.0f} MiB; {d['start'] / 2**20:.0f} MiB held before the phase")


def run() -> list[dict]:
    rows = [live_update(n) for n in DEMOS]
    rows.append(live_update(register_synthetic("bench_mlp25m", MLP25M)))
    rows += global_threshold_25m()
    rows += histograms_25m()
    rows.append(peak_memory_100m())
    return rows
