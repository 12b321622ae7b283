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
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

from core.errors import PrunescopeError, echo
from core.sensitivity.options import options_of, swept_options
from core.sensitivity.sweep import Sensitivity

if TYPE_CHECKING:
    from core.metrics import Metrics
    from core.plan import Plan

Evaluate = Callable[["Plan", bool], "Metrics"]  # (plan, with latency) -> its measured Metrics

_EPS = 1e-9
# Measured tries at most. The search mostly ends sooner (within 10% of a ``max_drop`` target, or
# its bracket closed): the cap stops a search still closing in. On digits_resnet, whose layers
# interact (a 2-point budget: harm 2.5 measured 1.2 points, harm 2.9 measured 6.6), 8 tries
# stopped it at 5.3% of the MACs saved and 11 reach 6.9% (the measured greedy: 6.7% in 37
# evaluations); the other demos stop at 2 to 8.
DEFAULT_TRIES = 12


@dataclass
class AutoPlan:
    """What the automatic plan chose, predicted and measured."""

    target: str  # "max_drop" | "max_macs" | "max_params" | "max_latency"
    value: float  # points of accuracy drop, or a fraction of the base's cost
    step: object | None  # the Prune step with per-layer overrides (None: nothing to prune)
    plan: object  # the current plan followed by the step
    amounts: dict[str, float]  # layer -> fraction of its units pruned (layers left out: none)
    predicted_accuracy: float  # source accuracy minus the summed predicted drops
    predicted_cost: float  # predicted cost as a fraction of the base's (MACs or non-zero parameters)
    metrics: object | None  # measured Metrics of the plan (None when there is no step)
    measured: float | None  # the measured figure the target is about (drop in points, or a ratio)
    met: bool
    reason: str  # a sentence: how it went
    tries: list[dict] = field(default_factory=list)  # per try: budget, predicted, measured
    cost: str = "macs"  # which saving the allocation maximised or limited
    measured_cost: float | None = None  # measured cost as a fraction of the base's (MACs or non-zero parameters)

    def to_dict(self) -> dict:
        m = self.metrics.to_dict() if self.metrics is not None else None
        return {"target": self.target, "value": self.value, "met": self.met, "reason": self.reason,
                "predicted_accuracy": self.predicted_accuracy, "predicted_cost": self.predicted_cost,
                "measured": self.measured, "cost": self.cost, "measured_cost": self.measured_cost,
                "amounts": self.amounts,
                "step": self.step.to_dict() if self.step is not None else None, "metrics": m, "tries": self.tries}


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


@dataclass
class _Target:
    """What every try of one automatic plan is measured against."""

    kind: str
    value: float
    cost: str  # "macs" | "params"
    base_cost: float  # the base's MACs or non-zero parameters
    src_acc: float  # the source's accuracy in the sweep
    src_cost: float  # the source's MACs or non-zero parameters in the sweep


def _unreachable(plan: Plan, t: _Target, options: dict) -> AutoPlan:
    most = t.src_cost - sum(o[-1][2] for o in options.values())
    reason = (f"cannot reach {t.value:.0%} of the base's {'MACs' if t.cost == 'macs' else 'non-zero parameters'}"
              f": every layer at its largest swept amount is predicted to leave {most / t.base_cost:.0%}; "
              "sweep larger amounts or another granularity")
    return AutoPlan(t.kind, t.value, None, plan, {}, t.src_acc, t.src_cost / t.base_cost, None, None,
                    False, reason, [], t.cost)


def _nothing_fits(plan: Plan, t: _Target) -> AutoPlan:
    reason = (f"no layer can be pruned by its smallest swept amount while changing at most {t.value:g}% of "
              "the predictions; the plan is unchanged (sweep smaller amounts, or allow a larger drop)")
    return AutoPlan(t.kind, t.value, None, plan, {}, t.src_acc, t.src_cost / t.base_cost, None, 0.0,
                    t.kind == "max_drop", reason, [], t.cost)


def _try(plan: Plan, evaluate: Evaluate, t: _Target, how: tuple[str, str], pick: dict[str, int], options: dict,
         drops: dict, budget: float, log: list[dict], move: str = "") -> AutoPlan:
    """The step of allocation ``pick`` (option index per layer), measured (its row
    appended to ``log``); ``how`` is (criterion, granularity)."""
    from core.prune.step import LayerOverride, Prune

    chosen = {n: options[n][i][0] for n, i in pick.items() if i > 0}
    predicted_accuracy = t.src_acc - sum(drops[n][i] for n, i in pick.items()) / 100
    predicted_cost = (t.src_cost - sum(options[n][i][2] for n, i in pick.items())) / t.base_cost
    step = Prune(criterion=how[0], granularity=how[1], seed=0,
                 layers=tuple(LayerOverride(n, sparsity=a) for n, a in chosen.items()))
    then = plan.then(step)
    m = evaluate(then, t.kind == "max_latency")
    cost_now = (m.macs if t.cost == "macs" else m.nonzero_params) / t.base_cost
    if t.kind == "max_drop":
        measured = 100 * (t.src_acc - m.accuracy)
    elif t.kind == "max_latency":
        measured = m.latency.median_ms / m.base_latency.median_ms
    else:
        measured = cost_now
    met = measured <= t.value + 1e-9
    log.append({"budget": budget, "layers": len(chosen), "predicted_accuracy": predicted_accuracy,
                "predicted_cost": predicted_cost, "accuracy": m.accuracy, "cost": cost_now,
                "measured": measured, "met": met, "move": move})
    return AutoPlan(t.kind, t.value, step, then, chosen, predicted_accuracy, predicted_cost, m, measured, met, "", [],
                    t.cost, cost_now)


def _better(a: AutoPlan, best: AutoPlan | None, kind: str) -> bool:
    """Whether try ``a`` (which meets the target) beats ``best``: the most saved for an
    accuracy target (then the smaller drop), else the most accurate."""
    return best is None or ((a.measured_cost, a.measured) < (best.measured_cost, best.measured) if kind == "max_drop"
                            else a.metrics.accuracy > best.metrics.accuracy)


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


def _refine_drop(plan: Plan, evaluate: Evaluate, t: _Target, how: tuple[str, str], options: dict, drops: dict,
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
        r = _try(plan, evaluate, t, how, allocs[k - 1], options, drops, harms[k - 1], log, move)
        rate = max(0.0, r.measured - lo_fig[1]) / max(harms[k - 1] - lo_fig[0], _EPS)  # secant from lo
        if closest is None or r.measured < closest.measured:
            closest = r
        if not r.met:
            missed.append(allocs[k - 1])
            continue
        if _better(r, best, t.kind):
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


def _finished(out: AutoPlan, log: list[dict]) -> AutoPlan:
    """``out`` with every try and the sentence that says how it went."""
    out.tries = list(log)
    kind, value, unit = out.target, out.value, "points" if out.target == "max_drop" else "of the base"
    noisy = " (timings on this machine are noisy)" if kind == "max_latency" and (
        out.metrics.latency.noisy or out.metrics.base_latency.noisy) else ""
    out.reason = (f"{'met' if out.met else 'missed'}: measured {_fmt(out.measured, kind)} {unit} against a target of "
                  f"{_fmt(value, kind)}; best of {len(log)} allocation(s){noisy}")
    if not out.met:
        out.reason += "; no allocation of the swept amounts met the target (the closest is kept, not applied)"
    return out


def _fit_cost(plan: Plan, evaluate: Evaluate, t: _Target, how: tuple[str, str], options: dict, drops: dict,
              tries: int, log: list[dict]) -> AutoPlan:
    """Tries for a MACs, parameter or latency target (module docstring)."""
    budget, best, last, seen = t.value, None, None, set()
    for _ in range(tries):
        need = t.src_cost - budget * t.base_cost
        pick, _, saved, _ = allocate(options, saving_needed=max(0.0, need))
        if need > 0 and saved < need - _EPS and not log:
            return _unreachable(plan, t, options)
        sig = tuple(sorted((n, i) for n, i in pick.items() if i > 0))
        if not sig and not log:
            return _nothing_fits(plan, t)
        if not sig or sig in seen:
            break  # the budget no longer changes the allocation
        seen.add(sig)
        last = _try(plan, evaluate, t, how, pick, options, drops, budget, log)
        if last.met and _better(last, best, t.kind):
            best = last
        budget = _next_budget(t.kind, budget, t.value, last.measured)
        if budget is None:
            break
    return _finished(best or last, log)


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
    t = _Target(kind, value, cost, float(base.macs if cost == "macs" else base.nonzero_params),
                sens.source["accuracy"], float(sens.source[cost]))
    log: list[dict] = []
    tries = max(1, tries)
    if progress is not None:
        evaluate = _reporting(evaluate, progress, log, tries, kind, value)
    if kind != "max_drop":  # the swept amounts: their savings are measured, an interpolated one is not exact
        options, drops = swept_options(sens, cost)
        out = _fit_cost(plan, evaluate, t, (criterion, granularity), options, drops, tries, log)
    else:
        options, drops = options_of(sens, cost)  # finer steps toward the accuracy budget
        out = _refine_drop(plan, evaluate, t, (criterion, granularity), options, drops, tries, log)
        out = _nothing_fits(plan, t) if out is None else _finished(out, log)
    if progress is not None:
        progress(len(log), len(log), f"{len(log)} tr{'y' if len(log) == 1 else 'ies'} measured")
    return out


def _reporting(evaluate: Evaluate, progress: Callable[[int, int, str], None], log: list[dict], tries: int,
               kind: str, value: float) -> Evaluate:
    """``evaluate`` that first says which try it measures, and what the one before measured."""
    unit = " points" if kind == "max_drop" else " of the base"

    def measured(plan: Plan, latency: bool) -> Metrics:
        what = f"measuring try {len(log) + 1} of at most {tries}"
        if log:
            last = log[-1]
            what += (f" · try {len(log)}: {_fmt(last['measured'], kind)}{unit}, "
                     f"{'met' if last['met'] else 'missed'} (target {_fmt(value, kind)})")
        progress(len(log), tries, what)
        return evaluate(plan, latency)

    return measured


def _fmt(v: float, kind: str) -> str:
    return f"{v:.2f}" if kind == "max_drop" else f"{v:.1%}"


__all__ = ["AutoPlan", "DEFAULT_TRIES", "autoplan", "allocate", "check_target", "greedy_path", "sweep_bound",
           "sweep_budget"]
