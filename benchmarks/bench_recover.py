"""Recovery benchmarks: accuracy on the full test split after 50% of channels are removed
(l1), then after a fine-tune (labels + distillation from the base), and the seconds the
fine-tune took on this machine's CPU threads."""
from __future__ import annotations

import time

import torch

from benchmarks.common import row

TARGETS = {"digits_cnn": (1.5, 150), "digits_resnet": (2.0, 150)}  # (max drop in points, steps)


def recovery(name: str) -> dict:
    from core.prune import Prune
    from core.recover import Finetune
    from core.workspace import Workspace

    max_drop, steps = TARGETS[name]
    ws = Workspace(name, "cpu")
    base = ws.base_metrics("full", latency=False).accuracy
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    pruned = ws.metrics("full", latency=False).accuracy
    t0 = time.perf_counter()
    ws.add_step(Finetune(steps=steps, lr=2e-3, loss="both", threads=torch.get_num_threads()))
    seconds = time.perf_counter() - t0
    tuned = ws.metrics("full", latency=False).accuracy
    drop = 100 * (base - tuned)
    ok = drop <= max_drop and seconds <= 60
    return row(f"fine-tune after 50% channels (l1): accuracy drop ({name})", round(drop, 2), "points",
               f"<= {max_drop} in <= 60 s", ok,
               f"full test split: base {100 * base:.2f}%, pruned {100 * pruned:.2f}%, fine-tuned {100 * tuned:.2f}% "
               f"after {steps} steps of 64 (labels + distillation, T=4) in {seconds:.1f} s on "
               f"{torch.get_num_threads()} threads")


def semi_structured(name: str = "digits_vit") -> dict:
    """2:4 sparse tensor-core kernels against the dense half-precision model (CUDA only)."""
    from core.plan import Plan, apply
    from core.prune import NMSparsity
    from core.prune.nm import semi_structured_speedup

    if not torch.cuda.is_available():
        return row(f"2:4 semi-structured speed-up, batch 1024 ({name})", None, "x", "report (CUDA)", True,
                   "skipped: no CUDA device on this machine")
    model = apply(Plan(name).then(NMSparsity()))
    from core.sources.models import get_spec

    x = torch.randn(1024, *get_spec(name).input_shape)
    out = semi_structured_speedup(model, x)
    return row(f"2:4 semi-structured speed-up, batch 1024 ({name})", round(out["speedup"], 2), "x", "report (CUDA)",
               True, f"dense fp16 {out['dense_ms']:.3f} ms, 2:4 sparse {out['sparse_ms']:.3f} ms on "
                     f"{torch.cuda.get_device_name(0)}")


def run() -> list[dict]:
    return [*(recovery(n) for n in TARGETS), semi_structured()]


if __name__ == "__main__":
    for r in run():
        print(r)
