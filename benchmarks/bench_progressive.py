"""The real-size live loop on a CPU: torchvision ResNet-50 and ViT-B/16 (random weights, 224 px,
synthetic data, a quick subset of 64 images).

* first readout / full quick evaluation: the provisional figures on the glimpse (a stratified
  tenth of the quick subset, ``Evaluator.evaluate(..., "glimpse")``) against the quick figures of
  the same model (target <= 0.1x).
* late-layer override with prefix reuse / full: the quick figures of a model whose per-layer
  override on the last block moved, run by the live loop's ``LivePrefix`` from the previous
  model's kept activations, against the same figures from a whole forward (target: under 1;
  the same figures are checked).

Baseline and ours run in the same process, interleaved, 3 times; the rows give the median
ratio and the range.
"""
from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import row
from core.sources.datasets import DATASETS, DataSplits, register_dataset
from core.sources.models import MODELS, ModelSpec, register_model

QUICK = 64  # images in the quick subset
LATE = {"resnet50": "layer4.2.conv3", "vit_b_16": "encoder.layers.encoder_layer_11.mlp.3"}  # the override's layer
REPEAT = 3


def register_vision(arch: str, classes: int = 10) -> str:
    """Register torchvision ``arch`` (random weights, ``classes`` outputs) and seeded random
    224 px images with labels in ``classes`` for it (benchmarks only)."""
    name, ds = f"bench_{arch}", f"bench_{arch}_data"
    if ds not in DATASETS._items:
        def make() -> DataSplits:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(QUICK + 16, 3, 224, 224, generator=g)
            y = torch.randint(0, classes, (QUICK + 16,), generator=g)
            return DataSplits(ds, x[:16], y[:16], x[16:], y[16:], [str(i) for i in range(classes)],
                              description="random benchmark images")
        register_dataset(ds)(make)
    if name not in MODELS._items:
        def build():
            import torchvision

            torch.manual_seed(0)
            return torchvision.models.get_model(arch, weights=None, num_classes=classes).eval()
        register_model(ModelSpec(name=name, factory=build, input_shape=(3, 224, 224), dataset=ds,
                                 description=f"torchvision {arch}, random weights"))
    return name


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    got = fn()
    return time.perf_counter() - t0, got


def live_loop(arch: str) -> list[dict]:
    from core.plan import apply
    from core.prune import LayerOverride, Prune
    from core.sensitivity.prefix import LivePrefix
    from core.workspace import Workspace
    from core.workspace.live import LIVE_PREFIX_BYTES

    ws = Workspace(register_vision(arch), "cpu", quick_size=QUICK, latency_time=0.1)
    ev = ws.evaluator
    ev.base_outputs("quick"), ev.base_outputs("glimpse")  # the base's reference outputs, once
    late = LATE[arch]

    def model(sparsity: float):
        step = Prune(criterion="l1", granularity="weight", sparsity=0.3,
                     layers=(LayerOverride(late, sparsity=sparsity),))
        return apply(ws.plan.then(step), ws.base, ctx=ws.ctx)

    before, after = model(0.5), model(0.8)  # the override moved from 50% to 80% on the last block's layer
    live = LivePrefix(LIVE_PREFIX_BYTES)
    x = ev.evalset.quick()[0]

    def prefix_run():
        live.run(before, x)  # the previous move, which keeps its activations (not timed)
        return _timed(lambda: ev.evaluate(after, "quick", latency=False, forward=live.run))

    runs = {"full": lambda: _timed(lambda: ev.evaluate(after, "quick", latency=False)),
            "glimpse": lambda: _timed(lambda: ev.evaluate(after, "glimpse", latency=False)),
            "prefix": prefix_run}
    ev.evaluate(after, "glimpse", latency=False)  # once untimed: the one-time import of scipy's intervals
    first, prefix, same = [], [], True
    for i in range(REPEAT):  # interleaved, the order flipped every other round
        t = {what: runs[what]() for what in (list(runs) if i % 2 == 0 else list(runs)[::-1])}
        (tf, full), (tg, _), (tp, ours) = t["full"], t["glimpse"], t["prefix"]
        same &= ours.accuracy == full.accuracy and abs(ours.loss - full.loss) < 1e-5
        first.append(tg / tf)
        prefix.append(tp / tf)
        full_s = tf
    skipped = len(live.skipped)
    g = len(ev.evalset.glimpse()[1])
    r1, r2 = statistics.median(first), statistics.median(prefix)
    return [
        row(f"first readout / full quick evaluation ({arch} 224px)", round(r1, 3), "x", "<= 0.1", r1 <= 0.1,
            f"glimpse of {g} vs quick subset of {QUICK} images, {REPEAT} interleaved runs, range "
            f"{min(first):.3f}-{max(first):.3f}; last full quick evaluation {full_s:.1f} s, "
            f"{torch.get_num_threads()} threads"),
        row(f"late override re-evaluation with prefix reuse / full ({arch} 224px)", round(r2, 3), "x", "< 1",
            r2 < 1, f"override on {late} moved 50% -> 80%; quick subset of {QUICK}; {skipped} modules skipped; "
                    f"same accuracy and loss as the whole forward: {same}; {REPEAT} interleaved runs, range "
                    f"{min(prefix):.3f}-{max(prefix):.3f}"),
    ]


def run() -> list[dict]:
    return [r for arch in LATE for r in live_loop(arch)]
