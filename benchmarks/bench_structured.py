"""Structured pruning benchmarks: is the pruned model really faster, and does our step
cost about what calling Torch-Pruning directly costs?"""
from __future__ import annotations

import copy

import torch

from benchmarks.common import row, timeit
from core.metrics import count_macs, measure_latency
from core.plan import ApplyContext
from core.prune import Prune
from core.prune.structured import structured_prune_step
from core.sources.bases import load_base

MODEL = "digits_resnet"
RATIO = 0.5
BATCH = 64


def latency_ratio() -> list[dict]:
    """Dense vs 50%-channel-pruned digits_resnet, batch 64 on CPU."""
    ctx = ApplyContext(MODEL, torch.device("cpu"))
    base = load_base(MODEL, "cpu")
    pruned = structured_prune_step(Prune(criterion="l1", granularity="channel", sparsity=RATIO), base, ctx)[0]
    x = ctx.calibration(0)[0][:BATCH]
    # interleave the two measurements so a noisy neighbour hits both alike
    dense_ms, pruned_ms = [], []
    for _ in range(3):
        dense_ms.append(measure_latency(base, x, BATCH, min_run_time=0.4).median_ms)
        pruned_ms.append(measure_latency(pruned, x, BATCH, min_run_time=0.4).median_ms)
    d, p = min(dense_ms), min(pruned_ms)
    speedup = d / p
    macs_ratio = count_macs(base, x) / count_macs(pruned, x)
    threads = torch.get_num_threads()
    return [
        row(f"latency dense/pruned {MODEL} 50% channels", round(speedup, 2), "x", ">=2.0x", speedup >= 2.0,
            f"dense {d:.2f} ms, pruned {p:.2f} ms (batch {BATCH}, cpu, {threads} threads); "
            f"MACs ratio {macs_ratio:.2f}x"),
        row(f"MACs dense/pruned {MODEL} 50% channels", round(macs_ratio, 2), "x", "(beside latency)", True,
            "multiply-accumulates per example, FlopCounterMode"),
    ]


def step_vs_torch_pruning() -> list[dict]:
    """Our structured step against Torch-Pruning's MetaPruner on the same model and ratio."""
    import torch_pruning as tp

    ctx = ApplyContext(MODEL, torch.device("cpu"))
    base = load_base(MODEL, "cpu")
    example = ctx.calibration(0)[0][:1]
    step = Prune(criterion="l1", granularity="channel", sparsity=RATIO)

    def ours():
        return structured_prune_step(step, base, ctx)[0]

    def direct():
        m = copy.deepcopy(base)
        for p in m.parameters():
            p.requires_grad_(True)
        imp = tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer="mean")
        pruner = tp.pruner.MetaPruner(m, example, importance=imp, pruning_ratio=RATIO, global_pruning=True,
                                      ignored_layers=[m.head[2]])
        pruner.step()
        return m

    a, b = ours(), direct()
    n_ours, n_tp = (sum(p.numel() for p in m.parameters()) for m in (a, b))
    t_ours, t_tp = [], []
    for _ in range(3):  # interleaved medians
        t_ours.append(timeit(ours, repeat=5, warmup=1))
        t_tp.append(timeit(direct, repeat=5, warmup=1))
    o, d = min(t_ours), min(t_tp)
    ratio = o / d
    return [row(f"structured step vs Torch-Pruning {MODEL} 50%", round(ratio, 2), "x", "<=1.2x", ratio <= 1.2,
                f"ours {o * 1e3:.1f} ms, MetaPruner {d * 1e3:.1f} ms (deepcopy + graph + L1 + prune); "
                f"parameters after: ours {n_ours}, MetaPruner {n_tp} (residual groups: we average "
                f"all producers' scores, TP's 'first' reduction reads the root layer only)")]


def run() -> list[dict]:
    return latency_ratio() + step_vs_torch_pruning()


if __name__ == "__main__":
    for r in run():
        print(r)
