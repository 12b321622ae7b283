"""Surgery benchmarks: a cut with a least-squares bridge against one forward pass of the
calibration batch, and the drop-one guides with shared activations against without."""
from __future__ import annotations

import torch

from benchmarks.common import row, timeit
from core.plan import ApplyContext
from core.sources.bases import load_base
from core.surgery import Cut, block_names, default_container
from core.surgery.stitch import traced_activations


def _fresh(ctx: ApplyContext) -> ApplyContext:
    """A context with ``ctx``'s calibration batch and an empty memo: a build that traces its sources."""
    out = ApplyContext(ctx.model_name, ctx.device)
    out.use_calibration(0, ctx.calibration(0))
    return out


def cut_cost(name: str = "digits_resnet") -> dict:
    """Cut.build (clone, trace, fit, stitch) for a shape-changing block, in forwards of the batch
    (each build in a fresh context: no trace kept from the one before)."""
    ctx = ApplyContext(name)
    base = load_base(name)
    x = ctx.calibration(0)[0]
    cont = default_container(base, name)
    blocks = block_names(base, cont)
    with torch.inference_mode():
        t_fwd = timeit(lambda: base(x), repeat=5)
    t_cut = timeit(lambda: Cut((blocks[len(blocks) // 2],), bridge="lstsq").build(base, _fresh(ctx)), repeat=3)
    ratio = t_cut / t_fwd
    return row(f"cut+lstsq bridge / forward ({name})", round(ratio, 2), "x", "<= 6", ratio <= 6,
               f"cut {t_cut * 1e3:.1f} ms, forward of {len(x)} examples {t_fwd * 1e3:.1f} ms")


def drop_one_sharing(name: str = "digits_resnet") -> dict:
    """All drop-one builds with the host activations traced once vs traced per build (each
    in a fresh context, so no trace is kept in the memo between them)."""
    ctx = ApplyContext(name)
    base = load_base(name)
    cont = default_container(base, name)
    blocks = block_names(base, cont)
    x = ctx.calibration(0)[0]

    def shared():
        c = _fresh(ctx)
        acts = {("self", cont): traced_activations(base, c, cont, x)}
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, c, acts_cache=acts)

    def separate():
        for b in blocks:
            Cut((b,), bridge="lstsq").build(base, _fresh(ctx))

    t_shared, t_sep = timeit(shared, repeat=3), timeit(separate, repeat=3)
    speedup = t_sep / t_shared
    return row(f"drop-one builds, shared activations speed-up ({name})", round(speedup, 2), "x", ">= 1.2",
               speedup >= 1.2, f"shared {t_shared * 1e3:.0f} ms, separate {t_sep * 1e3:.0f} ms, {len(blocks)} blocks")


ROUNDS = 3  # interleaved rounds of (quick forward, cut, paste); a row gives the median round's ratio


def _edit_costs(ws, blocks: list[str], name: str) -> dict:
    """The page's cut and paste from a donor, each a fresh plan (build with its bridge fits,
    then the quick-subset evaluation), in ``ROUNDS`` rounds, each with its own calibration
    seed (a new plan: nothing cached) and a quick forward of the base timed right before it,
    so each round's ratio is measured under the same load. Seconds and ratios per round;
    latency timing (after the page is drawn) and a paste in a fresh context once."""
    import importlib
    import time

    from core.surgery import Paste

    stitch_mod = importlib.import_module("core.surgery.stitch")  # the module (core.surgery.stitch is also a function)
    x_quick = ws.evalset.quick()[0]
    base_plan = ws.plan
    fit_time = [0.0]
    real_fit = stitch_mod.bridge_seam

    def timed_fit(*a, **k):  # the fits (bridge_seam: least squares and fit error), timed apart for the details
        t0 = time.perf_counter()
        try:
            return real_fit(*a, **k)
        finally:
            fit_time[0] += time.perf_counter() - t0

    def edit(step) -> tuple[float, float]:
        ws.set_plan(base_plan)
        fit_time[0] = 0.0
        t0 = time.perf_counter()
        ws.set_plan(base_plan.then(step))
        ws.metrics("quick", latency=False)
        return time.perf_counter() - t0, fit_time[0]

    out: dict = {k: [] for k in ("fwd", "cut", "fit_cut", "paste", "fit_paste")}
    stitch_mod.bridge_seam = timed_fit
    try:
        for r in range(ROUNDS):
            with torch.inference_mode():
                out["fwd"].append(timeit(lambda: ws.model(x_quick), repeat=3))
            for k, step in (("cut", Cut((blocks[1],), bridge="lstsq", seed=r)),
                            ("paste", Paste(block=blocks[1], source=name, at=2, adapter="lstsq", seed=r))):
                t, fit = edit(step)
                out[k].append(t)
                out[f"fit_{k}"].append(fit)
                if r == 0:  # timed once: later rounds have the same architecture, whose latency is kept
                    t0 = time.perf_counter()
                    ws.metrics("quick", latency=True)
                    out[f"lat_{k}"] = time.perf_counter() - t0
    finally:
        stitch_mod.bridge_seam = real_fit
    t0 = time.perf_counter()
    step.build(ws.base, ApplyContext(name))  # a fresh context: no trace of the host nor the donor kept yet
    out["cold_paste_build"] = time.perf_counter() - t0
    ws.set_plan(base_plan)
    return out


def _median_round(c: dict, k: str) -> int:
    ratios = [t / f for t, f in zip(c[k], c["fwd"])]
    return sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]


def _edit_rows(c: dict, name: str) -> list[dict]:
    rows = []
    for k, what, title in (("cut", "cut + bridge fit + evaluation", "cut (lstsq)"),
                           ("paste", "paste + bridge fits + evaluation", "paste from donor")):
        i = _median_round(c, k)
        t, fit, fwd = c[k][i], c[f"fit_{k}"][i], c["fwd"][i]
        ratios = ", ".join(f"{a / f:.2f}" for a, f in zip(c[k], c["fwd"]))
        more = (f"; the paste's build alone in a fresh context (no calibration trace kept) "
                f"{c['cold_paste_build'] * 1e3:.0f} ms" if k == "paste" else "")
        rows.append(row(
            f"surgery {title} with the fit / quick forward ({name})", round(t / fwd, 2), "x", "<= 3", t <= 3 * fwd,
            f"median of {len(c[k])} rounds ({ratios}): {what} {t * 1e3:.0f} ms ({(t - fit) / fwd:.2f}x without "
            f"the fit), bridge fits {fit * 1e3:.0f} ms, one quick-set forward beside it {fwd * 1e3:.0f} ms{more}; "
            f"then latency timing {c[f'lat_{k}'] * 1e3:.0f} ms (after the page is drawn)"))
    return rows


def page_costs(name: str = "digits_resnet") -> list[dict]:
    """What the Surgery page computes before it is drawn, in quick-set forwards of the
    current model: opening it (blocks of the current model and the base, metrics already
    known from the page before), a cut and a paste from a donor (the step's build,
    least-squares fit included, and the quick-subset evaluation; ``_edit_costs``). Latency
    is timed after the page is drawn, with its own progress bar; its cost is reported
    beside. The guides are computed on request, with a progress bar; their cost is
    reported too."""
    import time

    from core.surgery import list_blocks
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
    edits = _edit_costs(ws, blocks, name)
    t0 = time.perf_counter()
    ws.guides(cont)
    t_guides = time.perf_counter() - t0
    fwd = f"one quick-set forward ({len(x_quick)} examples) {t_fwd * 1e3:.0f} ms"
    return [
        row(f"surgery page open / quick forward ({name})", round(t_open / t_fwd, 2), "x", "<= 2",
            t_open <= 2 * t_fwd, f"open {t_open * 1e3:.0f} ms; {fwd}"),
        *_edit_rows(edits, name),
        row(f"surgery guides, on request / quick forward ({name})", round(t_guides / t_fwd, 2), "x", "report",
            True, f"{len(blocks)} blocks, {t_guides:.1f} s with a progress bar; {fwd}"),
    ]


def run() -> list[dict]:
    return [cut_cost(), drop_one_sharing(), *page_costs()]


if __name__ == "__main__":
    for r in run():
        print(r)
