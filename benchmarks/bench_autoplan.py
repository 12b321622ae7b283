"""Automatic plans against a slow measured reference: on each demo model, ``autoplan
--max-drop 2`` (its own sensitivity sweep included: it stops each layer past
``sweep_bound(2)`` points of changed predictions) against the NetAdapt-style greedy of
``core.sensitivity.greedy`` at the same budget, both measured on the quick subset in the
same process, each on a fresh workspace (no cached evaluations shared) after a warm-up of both
paths on a throwaway one (the first to run would pay the process's one-time costs); the greedy steps every
0.05 of a layer's units (NetAdapt's small steps: a stronger and slower reference than the sweep's grid). Rows: the MACs
autoplan saves as a share of the reference's (target >= 0.9), its time as a share of the
reference's (<= 0.25; and, for the record, without the sweep's time, as on the
Sensitivity page where the sweep is already run), and the share of the 2-point budget its measured drop uses (>= 0.7
when a measured plan reaches it: the reference's use is the bar otherwise)."""
from __future__ import annotations

import time

import torch

from benchmarks.common import row

DEMOS = {"digits_mlp": "neuron", "digits_cnn": "channel", "digits_resnet": "channel", "digits_vit": "head"}
MAX_DROP = 2.0
AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the sweep's amounts (the default)
# the reference's steps: NetAdapt takes small steps (a fine grid is what makes it slow and strong)
FINE = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _fresh(name: str):
    from core.workspace import Workspace

    ws = Workspace(name, "cpu")
    ws.base_metrics(latency=False)  # the base's outputs and cost, warm for either method alike
    ws.metrics(latency=False)
    return ws


def _warm(name: str, granularity: str) -> None:
    """Pay the process's one-time costs (imports, the dependency graph's first trace, the MAC
    counter's first run) on a throwaway workspace, through both paths, before either is timed:
    whichever ran first would pay them (about a second on the demos), not its method."""
    from core.prune import Prune

    ws = _fresh(name)
    ws.sensitivity("l1", granularity, (0.5,))
    ws.evaluate_plan(ws.plan.then(Prune(criterion="l1", granularity=granularity, sparsity=0.25)), "quick",
                     latency=False)


def compare(name: str, granularity: str) -> list[dict]:
    """The three rows of one demo: autoplan (sweep + tries) against the measured greedy."""
    from core.sensitivity import Sensitivity
    from core.sensitivity.greedy import greedy_plan

    grid = AMOUNTS
    _warm(name, granularity)
    ws = _fresh(name)
    t0 = time.perf_counter()
    r = ws.autoplan(criterion="l1", granularity=granularity, max_drop=MAX_DROP, amounts=grid)  # sweeps, then tries
    t_auto = time.perf_counter() - t0
    sens, = (s for s in ws.sweeps.values() if isinstance(s, Sensitivity))
    t_sweep, points = sens.seconds, sum(len(p) for p in sens.layers.values())
    ws = _fresh(name)
    base = ws.base_metrics(latency=False)
    t0 = time.perf_counter()
    g = greedy_plan(ws.plan, ws.layer_names(granularity), lambda p: ws.evaluate_plan(p, "quick", latency=False),
                    base, max_drop=MAX_DROP, criterion="l1", granularity=granularity, amounts=FINE)
    t_ref = time.perf_counter() - t0
    a_saved = 1 - (r.measured_cost if r.measured_cost is not None else 1.0)
    g_saved = 1 - g.measured_cost
    share = a_saved / g_saved if g_saved > 0 else None
    used = (r.measured or 0.0) / MAX_DROP
    what = (f"{name}, {granularity}s, l1, max_drop {MAX_DROP:g} points, quick subset ({sens.n} examples), sweep "
            f"amounts {','.join(f'{a:g}' for a in grid)}"
            f", the greedy's steps every {FINE[0]:g}")
    mine = (f"autoplan saved {a_saved:.1%} of the base's MACs at a measured drop of {r.measured or 0:.2f} points "
            f"({len(r.tries)} tries: {', '.join(t.get('move', 'try') for t in r.tries)}); "
            f"the greedy saved {g_saved:.1%} at "
            f"{g.measured:.2f} points ({len(g.moves)} moves, {g.evaluations} evaluations)")
    reach = g.measured >= 0.7 * MAX_DROP
    return [
        row(f"autoplan MACs saved / measured greedy's ({name})", None if share is None else round(share, 3), "x",
            ">= 0.9", a_saved >= 0.9 * g_saved, f"{what}: {mine}"),
        row(f"autoplan time / measured greedy's ({name})", round(t_auto / t_ref, 3), "x", "<= 0.25",
            t_auto <= 0.25 * t_ref,
            f"autoplan {t_auto:.1f} s (sweep {t_sweep:.1f} s included, not cached: {points} points of "
            f"{len(sens.layers)} layers x {len(grid)} amounts, each layer stopped past {sens.stop_harm:g} points of "
            f"changed predictions) vs greedy {t_ref:.1f} s, same process, {torch.get_num_threads()} threads"),
        row(f"autoplan tries alone (sweep cached) / measured greedy's ({name})", round((t_auto - t_sweep) / t_ref, 3),
            "x", "report", True, f"the Sensitivity page's case, the sweep already run: {t_auto - t_sweep:.2f} s of "
            f"measured tries vs {t_ref:.1f} s"),
        row(f"autoplan budget used ({name})", round(used, 3), "x", ">= 0.7 if reachable", used >= 0.7 or (
            not reach and r.measured is not None and r.measured >= g.measured - 1e-9),
            f"measured drop {r.measured or 0:.2f} of {MAX_DROP:g} points; the measured greedy used "
            f"{g.measured / MAX_DROP:.0%} ({'reachable' if reach else 'no measured single step past it fits'})"),
    ]


def run() -> list[dict]:
    return [r for name, gran in DEMOS.items() for r in compare(name, gran)]
