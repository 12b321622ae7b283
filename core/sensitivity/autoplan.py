"""Automatic per-layer plans: amounts per layer chosen from sensitivity curves to meet a
target, built as one ordinary ``Prune`` step with per-layer overrides, then measured.

**Allocation** (a greedy for the multiple-choice knapsack). Each layer offers its swept
amounts, each with a harm (points of examples whose prediction it changes: an upper bound
of its accuracy drop, see ``options.py``), a predicted drop and a saving (MACs or non-zero
parameters removed), all non-decreasing along the amounts and added up over layers. From
nothing pruned, the greedy takes the move (one layer to a larger amount) with the most
saving per point of harm: for ``max_drop=X`` while a move fits in X points of harm; for
``max_macs`` / ``max_params`` / ``max_latency=R`` until the predicted cost (MACs stand in
for time) is at most R of the base's.

**Measurement and refinement.** The step is evaluated like any plan. Layers do not add up
exactly (and harm over-counts the drop), so each measured try steers the next, at most
``tries`` of them:

- ``max_drop``: the greedy's moves (no budget), cut into single amount steps, form a
  *path* from the last try that met (at first, nothing pruned); each allocation on it
  holds the one before, so the measured drop grows (nearly) monotonically along it. The
  first try goes as far as the harm budget allows; each next one where the measured drop
  per point of harm predicts the target (grow while below it), inside the bracket between
  the try that met and the first allocation that holds one that missed (back off). A
  layer whose next step alone misses is held; the others grow on. It stops within 10% of
  the target, or when the bracket closes.
- cost targets: when the measured figure misses, the budget is tightened in proportion to
  the miss (loosened when far inside it) and the allocation runs again.

Every try is kept in the result, and the best one that meets the target is returned. A
target that no allocation of the swept amounts can reach is reported with the reason,
never met silently.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING

from core.errors import PrunescopeError, echo
from core.sensitivity.options import options_of, swept_options
from core.sensitivity.sweep import Sensitivity
from core.sensitivity.tries import (
    DEFAULT_TRIES,
    AutoPlan,
    Evaluate,
    Target,
    better,
    finished,
    measure_try,
    nothing_fits,
    reporting,
    unreachable,
)

if TYPE_CHECKING:
    from core.metrics import Metrics
    from core.plan import Plan


_EPS = 1e-9


def allocate(options: dict[str, list[tuple[float, float, float]]], *, drop_budget: float | None = None,
             saving_needed: float | None = None) -> tuple[dict[str, int], float, float, int]:
    """The greedy allocation: option index per layer, predicted drop, predicted saving, moves made."""
    pick = dict.fromkeys(options, 0)
    drop = saving = 0.0
    moves = 0
    while saving_needed is None or saving < saving_needed - _EPS:
        moves += 1
        best = finish = None
        for n, opts in options.items():
            i = pick[n]
            for j in range(i + 1, len(opts)):
                dd, ds = opts[j][1] - opts[i][1], opts[j][2] - opts[i][2]
                if ds <= 0 or (drop_budget is not None and drop + dd > drop_budget + _EPS):
                    continue
                key = (ds / max(dd, _EPS), ds)
                if best is None or key > best[0]:
                    best = (key, n, j, dd, ds)
                if saving_needed is not None and saving + ds >= saving_needed - _EPS and (
                        finish is None or (dd, ds) < (finish[3], finish[4])):
                    finish = (key, n, j, dd, ds)
        if best is None:
            moves -= 1
            break
        if finish is not None and finish[3] <= best[3]:
            best = finish  # reaches the target with no more drop than the best ratio: no overshoot
        _, n, j, dd, ds = best
        pick[n], drop, saving = j, drop + dd, saving + ds
    return pick, drop, saving, moves


def check_target(granularity: str, max_drop=None, max_macs=None, max_params=None, max_latency=None
                 ) -> tuple[str, float, str]:
    """The one target given, checked: ``(kind, value, cost)``, ``cost`` the saving the
    allocation counts ("macs" or "params"). Cheap: check it before running a sweep.

    Raises:
        PrunescopeError: no target or several; a target out of range; MACs or latency
            targets with weight granularity (masks do not change dense MACs).
    """
    given = {k: v for k, v in (("max_drop", max_drop), ("max_macs", max_macs), ("max_params", max_params),
                               ("max_latency", max_latency)) if v is not None}
    if len(given) != 1:
        raise PrunescopeError("give exactly one target: max_drop (points of accuracy), or max_macs, max_params "
                              f"or max_latency (a fraction of the base's), got {sorted(given) or 'none'}")
    (kind, v), = given.items()
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
        0 <= v <= 100 if kind == "max_drop" else 0 < v <= 1)
    if not ok:
        what = "points of accuracy in [0, 100]" if kind == "max_drop" else "a fraction of the base's in (0, 1]"
        raise PrunescopeError(f"{kind} must be {what}, got {echo(v)}")
    cost = "params" if kind == "max_params" or (kind == "max_drop" and granularity == "weight") else "macs"
    if cost == "macs" and granularity == "weight":
        raise PrunescopeError(f"{kind} with granularity 'weight': masking single weights leaves the dense MACs and "
                              "time unchanged; use max_params, or neuron / channel / head granularity")
    return kind, float(v), cost


def sweep_bound(max_drop: float) -> float:
    """Points of changed predictions after which a sweep for a ``max_drop`` budget stops a
    layer (``SweepSpec.stop_harm``): a layer's larger amounts cannot fit the budget. Harm
    over-counts the drop (changes cancel out across layers), so the bound is well past it."""
    return 3 * float(max_drop) + 1


def sweep_budget(stop_harm: float) -> float:
    """The largest ``max_drop`` (points) a sweep stopped at ``stop_harm`` can plan for: the
    inverse of :func:`sweep_bound`."""
    return (float(stop_harm) - 1) / 3


def _check_sweep(sens: Sensitivity, plan: Plan, criterion: str, granularity: str, kind: str, value: float) -> None:
    if sens.plan != plan.key() or sens.criterion != criterion or sens.granularity != granularity:
        raise PrunescopeError("this sensitivity sweep is of another plan, criterion or granularity; sweep the "
                              "current plan first")
    if not sens.complete:
        raise PrunescopeError("the sensitivity sweep was stopped before it finished; run it to the end first")
    if sens.stop_harm is not None and (kind != "max_drop" or sens.stop_harm < sweep_bound(value) - 1e-9):
        raise PrunescopeError(f"this sweep stopped each layer past {sens.stop_harm:g} points of changed predictions; "
                              f"a {kind} target of {value:g} needs " + (
                                  "every amount of every layer: run the sweep without stop_harm" if kind != "max_drop"
                                  else f"it to go on to {sweep_bound(value):g} points (or run it without stop_harm)"))


def greedy_path(options: dict[str, list[tuple[float, float, float]]], start: dict[str, int],
                held: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, int]]:
    """The greedy's moves from ``start`` (option index per layer) with no budget, expanded
    into single amount steps ``(layer, option index after it)``; ``held`` layers stay."""
    pick, path = dict(start), []
    while True:
        best = None
        for n, opts in options.items():
            i = pick[n]
            for j in range(i + 1, len(opts) if n not in held else 0):
                dd, ds = opts[j][1] - opts[i][1], opts[j][2] - opts[i][2]
                if ds > 0 and (best is None or (ds / max(dd, _EPS), ds) > best[0]):
                    best = ((ds / max(dd, _EPS), ds), n, j)
        if best is None:
            return path
        _, n, j = best
        path += [(n, k) for k in range(pick[n] + 1, j + 1)]
        pick[n] = j


def _next_on_path(harms: list[float], hi: int, value: float, lo: tuple[float, float], rate: float | None) -> int:
    """Steps of the path the next try takes (1 to ``hi - 1``): on the first try (``rate``
    None) as far as the harm budget allows, then where the measured drop per point of harm
    puts 95% of the target from the try that met (``lo``: its harm, measured drop), off
    the bracket's ends."""
    if rate is None:
        return sum(h <= value + _EPS for h in harms)
    h_lo, m_lo = lo
    want = h_lo + max(0.0, 0.95 * value - m_lo) / max(rate, _EPS)
    k = sum(h <= want + _EPS for h in harms)
    if hi > len(harms):  # nothing known to miss ahead: grow at most to 4x the harm that met, plus the target
        return max(1, min(k, sum(h <= 4 * h_lo + value + _EPS for h in harms)))
    n = hi - 1
    return max(1 + n // 6, min(k, hi - 1 - n // 6))


def _refine_drop(plan: Plan, evaluate: Evaluate, t: Target, how: tuple[str, str], options: dict, drops: dict,
                 tries: int, log: list[dict]) -> AutoPlan | None:
    """Tries along the greedy path toward a ``max_drop`` target (module docstring); None: no step fits."""
    lo, lo_fig = dict.fromkeys(options, 0), (0.0, 0.0)  # the last allocation that met: its harm, measured drop
    missed, held, n_held, best, closest, rate = [], set(), 0, None, None, None  # allocations that missed; held
    while len(log) < tries:
        path = greedy_path(options, lo, held)
        if not path:
            break
        allocs = list(accumulate(path, lambda a, st: {**a, st[0]: st[1]}, initial=lo))[1:]  # after each step
        hi = next((k for k, a in enumerate(allocs, 1) if any(all(a[n] >= b[n] for n in b) for b in missed)),
                  len(path) + 1)  # the first allocation that holds one that missed
        if hi == 1:  # this layer's next step misses: hold it, grow the others
            held.add(path[0][0])
            continue
        harms = [sum(options[n][i][1] for n, i in a.items()) for a in allocs]
        k = _next_on_path(harms, hi, t.value, lo_fig, rate)
        if k == 0:
            return None
        move = ("first" if rate is None else "grow others" if len(held) > n_held else "back off" if not log[-1]["met"]
                else "grow" if hi > len(path) else "bisect")
        n_held = len(held)
        r = measure_try(plan, evaluate, t, how, allocs[k - 1], options, drops, harms[k - 1], log, move)
        rate = max(0.0, r.measured - lo_fig[1]) / max(harms[k - 1] - lo_fig[0], _EPS)  # secant from lo
        if closest is None or r.measured < closest.measured:
            closest = r
        if not r.met:
            missed.append(allocs[k - 1])
            continue
        if better(r, best, t.kind):
            best = r
        lo, lo_fig = allocs[k - 1], (harms[k - 1], max(0.0, r.measured))
        if r.measured >= 0.9 * t.value:
            break
    return best or closest


def _next_budget(kind: str, budget: float, value: float, measured: float) -> float | None:
    """A cost target's next budget: tighter after a miss, looser far inside it; None: stop."""
    if measured > value or measured < 0.9 * value:
        return min(1.0, budget * value / measured) if measured > 0 else 1.0
    return None


def _fit_cost(plan: Plan, evaluate: Evaluate, t: Target, how: tuple[str, str], options: dict, drops: dict,
              tries: int, log: list[dict]) -> AutoPlan:
    """Tries for a MACs, parameter or latency target (module docstring)."""
    budget, best, last, seen = t.value, None, None, set()
    for _ in range(tries):
        need = t.src_cost - budget * t.base_cost
        pick, _, saved, _ = allocate(options, saving_needed=max(0.0, need))
        if need > 0 and saved < need - _EPS and not log:
            return unreachable(plan, t, options)
        sig = tuple(sorted((n, i) for n, i in pick.items() if i > 0))
        if not sig and not log:
            return nothing_fits(plan, t)
        if not sig or sig in seen:
            break  # the budget no longer changes the allocation
        seen.add(sig)
        last = measure_try(plan, evaluate, t, how, pick, options, drops, budget, log)
        if last.met and better(last, best, t.kind):
            best = last
        budget = _next_budget(t.kind, budget, t.value, last.measured)
        if budget is None:
            break
    return finished(best or last, log)


def autoplan(plan: Plan, sens: Sensitivity, evaluate: Evaluate, base: Metrics, *, criterion: str = "l1",
             granularity: str = "weight", max_drop: float | None = None, max_macs: float | None = None,
             max_params: float | None = None, max_latency: float | None = None, tries: int = DEFAULT_TRIES,
             progress: Callable[[int, int, str], None] | None = None) -> AutoPlan:
    """Per-layer amounts after ``plan`` that meet one target, measured
    (``Workspace.autoplan`` calls it with its own plan, sweep and measurements).

    Args:
        plan: the plan the step goes after (not changed: the result's ``plan`` is it
            followed by the step).
        sens: a complete sweep of ``plan``'s model with this criterion and granularity.
        evaluate: ``evaluate(plan, latency)``: the measured Metrics of a plan, on the
            subset the target is about (with latency, timed against the base, when asked).
        base: the base's Metrics (its MACs and non-zero parameters are what a cost
            target is a fraction of).
        max_drop: accuracy may drop at most this many points (against the source model,
            on the subset ``evaluate`` measures); for an embedding model, its neighbour recall@k.
        max_macs, max_params, max_latency: at most this fraction of the base's MACs,
            non-zero parameters, or measured latency (interleaved timing; noisy).
        tries: measured allocations at most (``max_drop``: refined along the greedy path;
            else each one tighter after a miss).
        progress: called with (tries measured, ``tries``, what) before each try is
            measured (what the last one measured), and with (n, n, ...) when the search ends.

    Returns:
        The best try that meets the target (or the closest, ``met`` False), every try in
        ``tries``.

    Raises:
        PrunescopeError: no target or several; a target out of range; MACs targets with
            weight granularity (masks do not change dense MACs); a sweep of another plan,
            or one stopped early.
    """
    kind, value, cost = check_target(granularity, max_drop, max_macs, max_params, max_latency)
    _check_sweep(sens, plan, criterion, granularity, kind, value)
    t = Target(kind, value, cost, float(base.macs if cost == "macs" else base.nonzero_params),
                sens.source["accuracy"], float(sens.source[cost]))
    log: list[dict] = []
    tries = max(1, tries)
    if progress is not None:
        evaluate = reporting(evaluate, progress, log, tries, kind, value)
    if kind != "max_drop":  # the swept amounts: their savings are measured, an interpolated one is not exact
        options, drops = swept_options(sens, cost)
        out = _fit_cost(plan, evaluate, t, (criterion, granularity), options, drops, tries, log)
    else:
        options, drops = options_of(sens, cost)  # finer steps toward the accuracy budget
        out = _refine_drop(plan, evaluate, t, (criterion, granularity), options, drops, tries, log)
        out = nothing_fits(plan, t) if out is None else finished(out, log)
    if progress is not None:
        progress(len(log), len(log), f"{len(log)} tr{'y' if len(log) == 1 else 'ies'} measured")
    return out


__all__ = ["AutoPlan", "DEFAULT_TRIES", "autoplan", "allocate", "check_target", "greedy_path", "sweep_bound",
           "sweep_budget"]
