"""Structured pruning benchmarks: is the pruned model really faster, and does our step
cost about what calling Torch-Pruning directly costs?"""
from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch
from torch import nn

from benchmarks.common import row
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


def _tp_step(model_name: str, base: nn.Module, example: torch.Tensor):
    """Torch-Pruning's MetaPruner from scratch on what our step prunes at the demo's granularity:
    every Linear/Conv but the output layer (a ViT: the MLP hidden units; its attention, patch
    embedding and residual width, which our neuron step leaves alone, ignored)."""
    import torch_pruning as tp

    def direct():
        m = copy.deepcopy(base)
        for p in m.parameters():
            p.requires_grad_(True)
        ignored = [[x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv2d))][-1]]
        if model_name == "digits_vit":
            ignored += [m.patch_embed] + [b.attn for b in m.blocks]
        imp = tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer="mean")
        with warnings.catch_warnings():  # the ViT's pos_embed: "unwrapped parameters", pruned on the last dim
            warnings.simplefilter("ignore")
            tp.pruner.MetaPruner(m, example, importance=imp, pruning_ratio=RATIO, global_pruning=True,
                                 ignored_layers=ignored).step()
        return m

    return direct


STEP_DEMOS = {"digits_resnet": "channel", "digits_cnn": "channel", "digits_mlp": "neuron", "digits_vit": "neuron"}


def _step_row(model_name: str, granularity: str, rounds: int = 11) -> dict:
    """One demo: our step on a context reused across calls (the slider moved on the same base:
    the graph and the check are memoised for the source model), a fresh context per call
    (cold), and MetaPruner from scratch; one call of each per round, interleaved, medians."""
    ctx = ApplyContext(model_name, torch.device("cpu"))
    base = load_base(model_name, "cpu")
    example = ctx.calibration(0)[0][:1]
    step = Prune(criterion="l1", granularity=granularity, sparsity=RATIO)
    direct = _tp_step(model_name, base, example)

    def warm():
        return structured_prune_step(step, base, ctx)[0]

    def cold():
        fresh = ApplyContext(model_name, torch.device("cpu"))
        fresh.calibration(0)  # the dataset read is the app's, not the step's: kept out of both timings
        t0 = time.perf_counter()
        structured_prune_step(step, base, fresh)
        return time.perf_counter() - t0

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    n_ours, n_tp = (sum(p.numel() for p in m.parameters()) for m in (warm(), direct()))
    t_warm, t_cold, t_tp = [], [], []
    for _ in range(rounds):
        t_warm.append(timed(warm))
        t_cold.append(cold())
        t_tp.append(timed(direct))
    w, c, d = (statistics.median(t) for t in (t_warm, t_cold, t_tp))
    ratio = w / d
    return row(f"structured step vs Torch-Pruning {model_name} 50%", round(ratio, 2), "x", "<=1.2x", ratio <= 1.2,
               f"{granularity}s; ours {w * 1e3:.1f} ms with the context reused (the graph and the check memoised "
               f"per source model), cold {c * 1e3:.1f} ms = {c / d:.2f}x (fresh context: trace, scores, check "
               f"forward); MetaPruner {d * 1e3:.1f} ms (deepcopy + graph + L1 + prune); medians of {rounds} "
               f"interleaved rounds; parameters after: ours {n_ours}, MetaPruner {n_tp} (residual groups: we "
               f"average all producers' scores, TP's 'first' reduction reads the root layer only)")


def step_vs_torch_pruning() -> list[dict]:
    """Our structured step against Torch-Pruning's MetaPruner on the same model and ratio, per demo."""
    return [_step_row(name, granularity) for name, granularity in STEP_DEMOS.items()]


def run() -> list[dict]:
    return latency_ratio() + step_vs_torch_pruning()


if __name__ == "__main__":
    for r in run():
        print(r)
