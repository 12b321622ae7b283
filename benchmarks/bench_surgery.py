"""Surgery benchmarks: a cut with a least-squares bridge against one forward pass of the
calibration batch, and the drop-one guides with shared activations against without."""
from __future__ import annotations

import torch

from core.plan import ApplyContext
from core.models import clone_model, load_base
from core.surgery import Cut, block_names, default_container
from core.surgery.blocks import _activations

from .common import row, timeit


def cut_cost(name: str = "digits_resnet") -> dict:
    """Cut.build (clone, trace, fit, stitch) for a shape-changing block, in forwards of the batch."""
    ctx = ApplyContext(name)
    base = load_base(name)
    x = ctx.calibration(0)[0]
    cont = default_container(base, name)
    blocks = block_names(base, cont)
    with torch.inference_mode():
        t_fwd = timeit(lambda: base(x), repeat=5)
    t_cut = timeit(lambda: Cut((blocks[len(blocks) // 2],), bridge="lstsq").build(base, ctx), repeat=3)
    ratio = t_cut / t_fwd
    return row(f"cut+lstsq bridge / forward ({name})", round(ratio, 2), "x", "<= 6", ratio <= 6,
               f"cut {t_cut * 1e3:.1f} ms, forward of {len(x)} examples {t_fwd * 1e3:.1f} ms")


def drop_one_sharing(name: str = "digits_resnet") -> dict:
    """All drop-one builds with the host activations traced once vs traced per build."""
    ctx = ApplyContext(name)
    base = load_base(name)
    cont = default_container(base, name)
    blocks = block_names(base, cont)
    x = ctx.calibration(0)[0]

    def shared():
        acts = {("self", cont): _activations(clone_model(base), cont, x)}
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, ctx, acts_cache=acts)

    def separate():
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, ctx)

    t_shared, t_sep = timeit(shared, repeat=3), timeit(separate, repeat=3)
    speedup = t_sep / t_shared
    return row(f"drop-one builds, shared activations speed-up ({name})", round(speedup, 2), "x", ">= 1.2",
               speedup >= 1.2, f"shared {t_shared * 1e3:.0f} ms, separate {t_sep * 1e3:.0f} ms, {len(blocks)} blocks")


def run() -> list[dict]:
    return [cut_cost(), drop_one_sharing()]


if __name__ == "__main__":
    for r in run():
        print(r)
