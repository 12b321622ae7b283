"""Automatic per-layer plans: amounts per layer chosen from sensitivity curves to meet a
target, built as one ordinary ``Prune`` step with per-layer overrides, then measured.

**Allocation** (a greedy for the multiple-choice knapsack). Each layer offers its swept
amounts, each with a harm (the points of examples whose prediction it changes: an upper
bound of its accuracy drop, see ``_options``), a predicted accuracy drop (source minus that
point) and a saving (MACs or non-zero parameters the point removes), each made
non-decreasing along the amounts. Predictions add up over layers. Starting from nothing
pruned, the greedy repeatedly takes the move (one layer from its current amount to a
larger one) with the most saving per point of harm:

- ``max_drop=X``: while a move still fits in X points of harm;
- ``max_macs`` / ``max_params=R``: until the predicted cost is at most R of the base's.
- ``max_latency=R``: as ``max_macs=R`` (MACs stand in for time), then timed.

**Measurement.** The chosen step is evaluated like any plan. Predictions assume that
layers add up, which they do not exactly, so when the measured figure misses the target
the budget is tightened in proportion to the miss (loosened when far inside it) and the
allocation runs again, at most ``tries`` times; an allocation that misses again unchanged
keeps only its cheapest greedy moves. Every try is kept in the result, and the best one
that meets the target is returned. A target that no allocation of the swept
amounts can reach is reported with the reason, never met silently.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import PrunescopeError, echo
from core.sensitivity.sweep import Sensitivity

if TYPE_CHECKING:
    from core.metrics import Metrics
    from core.plan import Plan

Evaluate = Callable[["Plan", bool], "Metrics"]  # (plan, with latency) -> its measured Metrics

_EPS = 1e-9


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


def _options(sens: Sensitivity, cost: str) -> tuple[dict[str, list[tuple[float, float, float]]],
                                                    dict[str, list[float]]]:
    """layer -> [(amount, harm in points, saving)] with amount 0 first, and layer -> the
    predicted accuracy drop in points at each of those amounts; all non-decreasing.

    Harm is the share of examples whose prediction the point changes from the source's
    (which bounds the accuracy drop from above and does not cancel out across layers the
    way gains and losses of accuracy do), plus 0.1 x (1 - cosine with the source's
    outputs), so that of two layers
    that change no prediction alone the one that moves the outputs less goes first. An
    embedding has no predictions: its harm is the drop of its headline figure, the neighbour
    recall (points, never below 0), plus the same cosine term."""
    src_acc, src_cost = sens.source["accuracy"], sens.source[cost]
    out, drops = {}, {}
    for layer, pts in sens.layers.items():
        opts, dl, h_max, s_max, d_max = [(0.0, 0.0, 0.0)], [0.0], 0.0, 0.0, 0.0
        for p in pts:
            if p["amount"] <= 0:
                continue
            moved = max(0.0, src_acc - p["accuracy"]) if p.get("output") == "embedding" else p["changed"]
            harm = 100 * moved + 0.1 * (1 - p["source_cosine"])
            h_max = max(h_max, harm)
            s_max = max(s_max, float(src_cost - p[cost]))
            d_max = max(d_max, 100 * (src_acc - p["accuracy"]))
            opts.append((p["amount"], h_max, s_max))
            dl.append(d_max)
        out[layer], drops[layer] = opts, dl
    return out, drops


def allocate(options: dict[str, list[tuple[float, float, float]]], *, drop_budget: float | None = None,
             saving_needed: float | None = None, max_moves: int | None = None
             ) -> tuple[dict[str, int], float, float, int]:
    """The greedy allocation: option index per layer, predicted drop, predicted saving,
    moves made.
    ``max_moves`` stops it after that many moves (the first moves are the cheapest)."""
    pick = dict.fromkeys(options, 0)
    drop = saving = 0.0
    moves = 0
    while (saving_needed is None or saving < saving_needed - _EPS) and (max_moves is None or moves < max_moves):
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


def check_target(granularity: str, max_drop=None, max_macs=None, max_params=None,
                 max_latency=None) -> tuple[str, float, str]:
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


def _check_sweep(sens: Sensitivity, plan: Plan, criterion: str, granularity: str) -> None:
    if sens.plan != plan.key() or sens.criterion != criterion or sens.granularity != granularity:
        raise PrunescopeError("this sensitivity sweep is of another plan, criterion or granularity; sweep the "
                              "current plan first")
    if not sens.complete:
        raise PrunescopeError("the sensitivity sweep was stopped before it finished; run it to the end first")


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


def _try(plan: Plan, evaluate: Evaluate, t: _Target, criterion: str, granularity: str, chosen: dict[str, float],
         predicted_accuracy: float, predicted_cost: float, budget: float, log: list[dict]) -> AutoPlan:
    """The step of one allocation, measured (its row appended to ``log``)."""
    from core.prune.step import LayerOverride, Prune

    step = Prune(criterion=criterion, granularity=granularity, seed=0,
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
                "measured": measured, "met": met})
    return AutoPlan(t.kind, t.value, step, then, chosen, predicted_accuracy, predicted_cost, m, measured, met, "", [],
                    t.cost, cost_now)


def _better(a: AutoPlan, best: AutoPlan | None, kind: str) -> bool:
    """Whether try ``a`` (which meets the target) beats ``best``: the most saved for an
    accuracy target, else the most accurate."""
    return best is None or (a.measured_cost < best.measured_cost if kind == "max_drop" else
                            a.metrics.accuracy > best.metrics.accuracy)


def _next_budget(kind: str, budget: float, value: float, measured: float) -> float | None:
    """The next try's budget: tighter after a miss, looser when far inside the target
    (layers do not add up exactly); None when close enough to stop."""
    if measured > value:
        return budget * (value / measured if measured > 0 else 0.5) * (0.95 if kind == "max_drop" else 1.0)
    if kind == "max_drop" and measured < 0.8 * value:
        return budget * min(2.0, value / max(measured, value / 2))
    if kind != "max_drop" and measured < 0.9 * value:
        return min(1.0, budget * value / max(measured, 1e-9))
    return None


def _finished(out: AutoPlan, log: list[dict]) -> AutoPlan:
    """``out`` with every try and the sentence that says how it went."""
    kind, value = out.target, out.value
    out.tries = list(log)
    unit = "points" if kind == "max_drop" else "of the base"
    noisy = " (timings on this machine are noisy)" if kind == "max_latency" and (
        out.metrics.latency.noisy or out.metrics.base_latency.noisy) else ""
    out.reason = (f"{'met' if out.met else 'missed'}: measured {_fmt(out.measured, kind)} {unit} against a target of "
                  f"{_fmt(value, kind)}; best of {len(log)} allocation(s){noisy}")
    if not out.met:
        out.reason += "; no allocation of the swept amounts met the target (the closest is kept, not applied)"
    return out


def autoplan(plan: Plan, sens: Sensitivity, evaluate: Evaluate, base: Metrics, *, criterion: str = "l1",
             granularity: str = "weight", max_drop: float | None = None, max_macs: float | None = None,
             max_params: float | None = None, max_latency: float | None = None, tries: int = 8) -> AutoPlan:
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
        tries: allocations at most (each one tighter after a miss).

    Raises:
        PrunescopeError: no target or several; a target out of range; MACs targets with
            weight granularity (masks do not change dense MACs); a sweep of another plan,
            or one stopped early.
    """
    kind, value, cost = check_target(granularity, max_drop, max_macs, max_params, max_latency)
    _check_sweep(sens, plan, criterion, granularity)
    t = _Target(kind, value, cost, float(base.macs if cost == "macs" else base.nonzero_params),
                sens.source["accuracy"], float(sens.source[cost]))
    options, drops = _options(sens, cost)
    budget = value
    best: AutoPlan | None = None
    last: AutoPlan | None = None
    log: list[dict] = []
    seen: dict[tuple, int] = {}  # allocation -> its number of greedy moves
    max_moves = None
    for _ in range(max(1, tries)):
        if kind == "max_drop":
            pick, drop, saved, n_moves = allocate(options, drop_budget=budget, max_moves=max_moves)
        else:
            need = t.src_cost - budget * t.base_cost
            pick, drop, saved, n_moves = allocate(options, saving_needed=max(0.0, need))
            if need > 0 and saved < need - _EPS and not log:
                return _unreachable(plan, t, options)
        chosen = {n: options[n][i][0] for n, i in pick.items() if i > 0}
        drop = sum(drops[n][i] for n, i in pick.items())  # predicted accuracy drop, points
        if not chosen and not log:
            return _nothing_fits(plan, t)
        sig = tuple(sorted(chosen.items()))
        if sig in seen and log and not log[-1]["met"]:
            # The same allocation missed again: its moves are all predicted free (layers that
            # cost nothing alone cost something together). Keep only its cheapest moves.
            if kind != "max_drop":
                break
            max_moves = min(seen[sig] - 1, seen[sig] * 2 // 3)
            continue
        if not chosen or sig in seen:
            break  # the budget no longer changes the allocation
        seen[sig] = n_moves
        last = _try(plan, evaluate, t, criterion, granularity, chosen, t.src_acc - drop / 100,
                    (t.src_cost - saved) / t.base_cost, budget, log)
        if last.met and _better(last, best, kind):
            best = last
        budget = _next_budget(kind, budget, value, last.measured)
        if budget is None:
            break
    return _finished(best or last, log)


def _fmt(v: float, kind: str) -> str:
    return f"{v:.2f}" if kind == "max_drop" else f"{v:.1%}"


__all__ = ["AutoPlan", "autoplan", "allocate", "check_target"]
