"""A slow, measured greedy plan (NetAdapt-style), the reference automatic plans are judged by.

NetAdapt (Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
Applications", ECCV 2018) shrinks a network one layer at a time and measures every
candidate. Here, from the current plan and nothing more pruned, each round tries one more
step of amount on every layer that can still grow (each candidate is the whole plan with
that one layer raised to the next amount that removes a unit, evaluated on the same subset
as ``autoplan``), and keeps the candidate with the most MACs (weight granularity: non-zero
parameters) saved per point of accuracy dropped, among those whose measured drop from the
source stays within the budget. It stops when no candidate fits. A round costs one
evaluation per layer or more, and there is a round per step taken: with many layers and a
long way to the budget that is far more than ``autoplan``'s sweep and few tries; on small
models with few steps it can be less (``benchmarks/bench_autoplan.py`` measures both).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import PrunescopeError, echo

if TYPE_CHECKING:
    from core.metrics import Metrics
    from core.plan import Plan

Evaluate = Callable[["Plan"], "Metrics"]  # a plan -> its measured Metrics (no latency)

# A move that drops no accuracy is scored as if it dropped this many points, so of two free
# moves the one that saves more goes first.
_FREE = 1e-3


@dataclass
class GreedyPlan:
    """What the measured greedy chose, with every move it took."""

    max_drop: float  # the budget: points of accuracy drop against the source
    step: object | None  # the Prune step with per-layer overrides (None: no move fitted)
    plan: object  # the plan it started from, followed by the step
    amounts: dict[str, float]  # layer -> fraction of its units pruned
    metrics: object  # measured Metrics of ``plan`` (the source's when no move fitted)
    measured: float  # measured accuracy drop from the source, points
    measured_cost: float  # measured MACs (or non-zero parameters) as a fraction of the base's
    cost: str  # "macs" | "params"
    # per move taken: layer, amount, accuracy, drop (points), cost (fraction of the base's), evaluations so far
    moves: list[dict] = field(default_factory=list)
    evaluations: int = 0  # plans measured, all rounds together
    complete: bool = True  # False: stopped by ``should_stop``; the moves so far are kept

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "amounts": self.amounts, "measured": self.measured,
                "measured_cost": self.measured_cost, "cost": self.cost, "moves": self.moves,
                "evaluations": self.evaluations, "complete": self.complete,
                "step": self.step.to_dict() if self.step is not None else None}


def _step(criterion: str, granularity: str, amounts: dict[str, float]):
    from core.prune.step import LayerOverride, Prune

    return Prune(criterion=criterion, granularity=granularity, seed=0,
                 layers=tuple(LayerOverride(n, sparsity=a) for n, a in amounts.items() if a > 0))


def greedy_plan(plan: Plan, layers: list[str], evaluate: Evaluate, base: Metrics, *, max_drop: float,
                criterion: str = "l1", granularity: str = "channel",
                amounts: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                progress: Callable[[int, int, str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> GreedyPlan:
    """Per-layer amounts after ``plan`` chosen by measuring one more step on every layer,
    round after round, within ``max_drop`` points of accuracy (see the module docstring).

    Args:
        plan: the plan the step goes after (not changed).
        layers: the layers (or unit groups) that may grow, by their override names.
        evaluate: ``evaluate(plan)``: the measured Metrics of a plan on the subset the
            budget is about (``Workspace.evaluate_plan(plan, subset, latency=False)``).
        base: the base's Metrics (the cost is a fraction of its MACs or parameters).
        max_drop: points of accuracy the result may drop from ``plan``'s model.
        amounts: the amounts a layer steps through, in order (a coarser list is faster).
        progress: called with (round, rounds at most, what is measured) before each round.
        should_stop: polled between evaluations; True stops with the moves so far.

    Returns:
        The last move's plan and figures, every move in ``moves``.

    Raises:
        PrunescopeError: ``max_drop`` out of [0, 100]; no layers; amounts not increasing
            fractions in (0, 1].
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 100:
        raise PrunescopeError(f"max_drop must be points of accuracy in [0, 100], got {echo(max_drop)}")
    grid = tuple(amounts)
    if not layers or not grid or any(not 0 < a <= 1 for a in grid) or list(grid) != sorted(set(grid)):
        raise PrunescopeError(f"greedy_plan needs layers and increasing amounts in (0, 1], got {len(layers)} "
                              f"layer(s) and amounts {echo(grid)}")
    cost = "params" if granularity == "weight" else "macs"
    base_cost = float(base.macs if cost == "macs" else base.nonzero_params)
    src = evaluate(plan)
    level = dict.fromkeys(layers, 0)  # layer -> steps taken on the grid
    cur, out = src, GreedyPlan(float(max_drop), None, plan, {}, src, 0.0, _cost(src, cost) / base_cost, cost)
    out.evaluations = 1
    rounds = len(layers) * len(grid)
    for r in range(rounds):
        if progress is not None:
            progress(r, rounds, f"round {r + 1}: one more step on each of {len(layers)} layer(s)")
        best = None
        for n in layers:
            step = level[n] + 1
            while step <= len(grid):  # the next amount on the grid that removes something (a unit is whole)
                if should_stop is not None and should_stop():
                    out.complete = False
                    return out
                trial = {m: grid[i - 1] for m, i in {**level, n: step}.items() if i > 0}
                then = plan.then(_step(criterion, granularity, trial))
                m = evaluate(then)
                out.evaluations += 1
                drop, saved = 100 * (src.accuracy - m.accuracy), _cost(cur, cost) - _cost(m, cost)
                if saved > 0 or drop > max_drop + 1e-9:
                    break
                step += 1
            if step > len(grid) or drop > max_drop + 1e-9:
                continue
            key = saved / max(drop - 100 * (src.accuracy - cur.accuracy), _FREE)
            if best is None or key > best[0]:
                best = (key, n, then, m, drop, trial, step)
        if best is None:
            break
        _, n, then, cur, drop, trial, level[n] = best
        out.step, out.plan, out.amounts, out.metrics, out.measured = then.steps[-1], then, trial, cur, drop
        out.measured_cost = _cost(cur, cost) / base_cost
        out.moves.append({"layer": n, "amount": trial[n], "accuracy": cur.accuracy, "drop": drop,
                          "cost": out.measured_cost, "evaluations": out.evaluations})
    return out


def _cost(m: Metrics, cost: str) -> float:
    return float(m.macs if cost == "macs" else m.nonzero_params)


__all__ = ["GreedyPlan", "greedy_plan"]
