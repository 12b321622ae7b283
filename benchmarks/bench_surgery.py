"""Surgery benchmarks: a cut with a least-squares bridge against one forward pass of the
calibration batch, and the drop-one guides with shared activations against without."""
from __future__ import annotations

import torch

from benchmarks.common import row, timeit
from core.plan import ApplyContext
from core.sources.bases import load_base
from core.surgery import Cut, block_names, default_container
from core.surgery.stitch import traced_activations


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
        acts = {("self", cont): traced_activations(base, ctx, cont, x)}
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, ctx, acts_cache=acts)

    def separate():
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, ctx)

    t_shared, t_sep = timeit(shared, repeat=3), timeit(separate, repeat=3)
    speedup = t_sep / t_shared
    return row(f"drop-one builds, shared activations speed-up ({name})", round(speedup, 2), "x", ">= 1.2",
               speedup >= 1.2, f"shared {t_shared * 1e3:.0f} ms, separate {t_sep * 1e3:.0f} ms, {len(blocks)} blocks")


def page_costs(name: str = "digits_resnet") -> list[dict]:
    """What the Surgery page computes before it is drawn, in quick-set forwards of the
    current model: opening it (blocks of the current model and the base, metrics already
    known from the page before), a cut and a paste from a donor (the step's build,
    least-squares fit included, and the quick-subset evaluation). Latency is timed after
    the page is drawn, with its own progress bar; its cost is reported beside. The guides
    are computed on request, with a progress bar; their cost is reported too.

    Over 80 lines on purpose: it replays the page's calls in the page's order, one counted
    block each, and reads best beside the page as one script."""
    import time

    from core.surgery import Paste, list_blocks
    from core.workspace import Workspace

    ws = Workspace(name)
    ws.metrics("quick", latency=True)  # the page the person came from measured these
    x_quick = ws.evalset.quick()[0]
    with torch.inference_mode():
        t_fwd = timeit(lambda: ws.model(x_quick), repeat=3)
    cont = default_container(ws.model, name)
    x_cal = ws.ctx.calibration(0)[0]

    def open_page():
        list_blocks(ws.model, x_cal, cont, name)
        list_blocks(ws.base, x_cal, cont, name)
        ws.base_metrics("quick", latency=False)
        ws.metrics("quick", latency=False)
        ws.cached_guides(cont)

    t_open = timeit(open_page, repeat=3)
    blocks = block_names(ws.base, cont)
    base_plan = ws.plan

    def edit(step) -> tuple[float, float]:
        ws.set_plan(base_plan)
        t0 = time.perf_counter()
        ws.set_plan(base_plan.then(step))
        ws.metrics("quick", latency=False)
        t_edit = time.perf_counter() - t0
        t0 = time.perf_counter()
        ws.metrics("quick", latency=True)
        return t_edit, time.perf_counter() - t0

    # the target is "3x one quick-set forward plus the bridge fit": time the fits apart
    import importlib

    stitch_mod = importlib.import_module("core.surgery.stitch")  # the module (core.surgery.stitch is also a function)

    fit_time = [0.0]
    real_fit = stitch_mod.seam_bridge

    def timed_fit(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_fit(*a, **k)
        finally:
            fit_time[0] += time.perf_counter() - t0

    stitch_mod.seam_bridge = timed_fit
    try:
        t_cut, lat_cut = edit(Cut((blocks[1],), bridge="lstsq"))
        fit_cut, fit_time[0] = fit_time[0], 0.0
        t_paste, lat_paste = edit(Paste(block=blocks[1], source="digits_resnet", at=2, adapter="lstsq"))
        fit_paste = fit_time[0]
    finally:
        stitch_mod.seam_bridge = real_fit
    ws.set_plan(base_plan)
    t0 = time.perf_counter()
    ws.guides(cont)
    t_guides = time.perf_counter() - t0
    fwd = f"one quick-set forward ({len(x_quick)} examples) {t_fwd * 1e3:.0f} ms"
    return [
        row(f"surgery page open / quick forward ({name})", round(t_open / t_fwd, 2), "x", "<= 2",
            t_open <= 2 * t_fwd, f"open {t_open * 1e3:.0f} ms; {fwd}"),
        row(f"surgery cut (lstsq) without the fit / quick forward ({name})", round((t_cut - fit_cut) / t_fwd, 2),
            "x", "<= 3", t_cut - fit_cut <= 3 * t_fwd,
            f"cut + evaluation {t_cut * 1e3:.0f} ms ({t_cut / t_fwd:.2f}x with the fit), bridge fits "
            f"{fit_cut * 1e3:.0f} ms; then latency timing {lat_cut * 1e3:.0f} ms ({lat_cut / t_fwd:.1f}x, after the "
            f"page is drawn); {fwd}"),
        row(f"surgery paste from donor without the fit / quick forward ({name})",
            round((t_paste - fit_paste) / t_fwd, 2), "x", "<= 3", t_paste - fit_paste <= 3 * t_fwd,
            f"paste + evaluation {t_paste * 1e3:.0f} ms ({t_paste / t_fwd:.2f}x with the fit), bridge fits "
            f"{fit_paste * 1e3:.0f} ms; then latency timing {lat_paste * 1e3:.0f} ms "
            f"({lat_paste / t_fwd:.1f}x); {fwd}"),
        row(f"surgery guides, on request / quick forward ({name})", round(t_guides / t_fwd, 2), "x", "report",
            True, f"{len(blocks)} blocks, {t_guides:.1f} s with a progress bar; {fwd}"),
    ]


def run() -> list[dict]:
    return [cut_cost(), drop_one_sharing(), *page_costs()]


if __name__ == "__main__":
    for r in run():
        print(r)
