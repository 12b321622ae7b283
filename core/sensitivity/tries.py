"""One measured try of an automatic plan (``autoplan.py``): the step of an allocation, built
and evaluated like any plan, judged against the target; what a finished search returns, and
the progress it reports before each try."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.metrics import Metrics
    from core.plan import Plan

Evaluate = Callable[["Plan", bool], "Metrics"]  # (plan, with latency) -> its measured Metrics

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


@dataclass
class Target:
    """What every try of one automatic plan is measured against."""

    kind: str
    value: float
    cost: str  # "macs" | "params"
    base_cost: float  # the base's MACs or non-zero parameters
    src_acc: float  # the source's accuracy in the sweep
    src_cost: float  # the source's MACs or non-zero parameters in the sweep


def unreachable(plan: Plan, t: Target, options: dict) -> AutoPlan:
    most = t.src_cost - sum(o[-1][2] for o in options.values())
    reason = (f"cannot reach {t.value:.0%} of the base's {'MACs' if t.cost == 'macs' else 'non-zero parameters'}"
              f": every layer at its largest swept amount is predicted to leave {most / t.base_cost:.0%}; "
              "sweep larger amounts or another granularity")
    return AutoPlan(t.kind, t.value, None, plan, {}, t.src_acc, t.src_cost / t.base_cost, None, None,
                    False, reason, [], t.cost)


def nothing_fits(plan: Plan, t: Target) -> AutoPlan:
    reason = (f"no layer can be pruned by its smallest swept amount while changing at most {t.value:g}% of "
              "the predictions; the plan is unchanged (sweep smaller amounts, or allow a larger drop)")
    return AutoPlan(t.kind, t.value, None, plan, {}, t.src_acc, t.src_cost / t.base_cost, None, 0.0,
                    t.kind == "max_drop", reason, [], t.cost)


def measure_try(plan: Plan, evaluate: Evaluate, t: Target, how: tuple[str, str], pick: dict[str, int], options: dict,
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


def better(a: AutoPlan, best: AutoPlan | None, kind: str) -> bool:
    """Whether try ``a`` (which meets the target) beats ``best``: the most saved for an
    accuracy target (then the smaller drop), else the most accurate."""
    return best is None or ((a.measured_cost, a.measured) < (best.measured_cost, best.measured) if kind == "max_drop"
                            else a.metrics.accuracy > best.metrics.accuracy)


def finished(out: AutoPlan, log: list[dict]) -> AutoPlan:
    """``out`` with every try and the sentence that says how it went."""
    out.tries = list(log)
    kind, value, unit = out.target, out.value, unit_of(out.target)
    noisy = " (timings on this machine are noisy)" if kind == "max_latency" and (
        out.metrics.latency.noisy or out.metrics.base_latency.noisy) else ""
    out.reason = (f"{'met' if out.met else 'missed'}: measured {fmt(out.measured, kind)} {unit} against a target of "
                  f"{fmt(value, kind)}; best of {len(log)} allocation(s){noisy}")
    if not out.met:
        out.reason += "; no allocation of the swept amounts met the target (the closest is kept, not applied)"
    return out


def reporting(evaluate: Evaluate, progress: Callable[[int, int, str], None], log: list[dict], tries: int,
              kind: str, value: float) -> Evaluate:
    """``evaluate`` that first says which try it measures, and what the one before measured."""
    unit = unit_of(kind)

    def measured(plan: Plan, latency: bool) -> Metrics:
        what = f"measuring try {len(log) + 1} of at most {tries}"
        if log:
            last = log[-1]
            what += (f" · try {len(log)}: {fmt(last['measured'], kind)} {unit}, "
                     f"{'met' if last['met'] else 'missed'} (target {fmt(value, kind)})")
        progress(len(log), tries, what)
        return evaluate(plan, latency)

    return measured


def fmt(v: float, kind: str) -> str:
    return f"{v:.2f}" if kind == "max_drop" else f"{v:.1%}"


def unit_of(kind: str) -> str:
    """What a target's figure is in: points of accuracy, or a share of the base's."""
    return "points" if kind == "max_drop" else "of the base"


__all__ = ["AutoPlan", "DEFAULT_TRIES", "Evaluate", "Target", "better", "finished", "fmt", "measure_try",
           "nothing_fits", "reporting", "unit_of", "unreachable"]
