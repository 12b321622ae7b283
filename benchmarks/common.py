"""Shared helpers for the benchmarks: timing, synthetic models and datasets."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from core.sources.datasets import DATASETS, DataSplits, register_dataset
from core.sources.models import MODELS, ModelSpec, register_model


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def mlp(widths: list[int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


MLP25M = [1024, 4096, 4096, 1024, 10]  # 25.2 M parameters
MLP100M = [2048, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 10]  # 100.7 M parameters


def register_synthetic(name: str, widths: list[int], n_test: int = 512) -> str:
    """Register a seeded random MLP and a random dataset for it (benchmarks only)."""
    ds = f"{name}_data"
    if ds not in DATASETS._items:
        def make() -> DataSplits:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n_test + 128, widths[0], generator=g)
            y = torch.randint(0, widths[-1], (n_test + 128,), generator=g)
            return DataSplits(ds, x[:128], y[:128], x[128:], y[128:], [str(i) for i in range(widths[-1])],
                              kind="tabular", description="random benchmark data")
        register_dataset(ds)(make)
    if name not in MODELS._items:
        register_model(ModelSpec(name=name, factory=lambda: mlp(widths), input_shape=(widths[0],), dataset=ds,
                                 description=f"synthetic MLP {widths}"))
    return name


def row(name: str, value, unit: str, target: str, ok: bool, detail: str = "") -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": bool(ok), "detail": detail}


def live_pair(ws) -> tuple[Callable[[], None], Callable[[], None], int]:
    """(move, baseline, images) for a live-update benchmark on ``ws``'s model: ``move`` sets a
    new weight threshold (one of 7 quantiles of |w|, never the same twice) and reads the quick
    metrics; ``baseline`` is one forward of the same images plus one mask multiply per
    prunable layer. The architecture's latency is measured once first (cached after)."""
    from core.plan import Plan
    from core.prune import Prune
    from core.prune.masks import prunable_layers

    name = ws.name
    ws.metrics()
    w = torch.cat([m.weight.detach().abs().flatten()[:200_000] for m in prunable_layers(ws.base).values()])
    ts = [float(t) for t in torch.quantile(w.float().cpu(), torch.linspace(0.2, 0.8, 7))]
    ws.set_plan(Plan(name, (Prune(threshold=ts[0]),)))
    ws.metrics()  # latency of this architecture measured once (cached by architecture)
    i = [0]

    def move():
        i[0] += 1
        ws.set_plan(Plan(name, (Prune(threshold=ts[i[0] % len(ts)] * (1 + 1e-4 * i[0])),)))
        ws.metrics("quick")

    x, _ = ws.evalset.quick()
    layers = prunable_layers(ws.base)
    mk = {n: (m.weight.abs() >= ts[3]).float() for n, m in layers.items()}

    def baseline():
        with torch.inference_mode():
            ws.base(x)
            for n, m in layers.items():
                m.weight * mk[n]

    return move, baseline, len(x)
