"""Gradual pruning (Zhu and Gupta, 2017, "To prune, or not to prune"): reach a target
amount in ``k`` increments that follow a cubic schedule, fine-tuning after each, as an
ordinary sequence of plan steps (so it replays, undoes and exports like any other)."""
from __future__ import annotations

import dataclasses

from core.errors import StepError
from core.prune import Prune
from core.recover.training import Finetune


def cubic_schedule(target: float, increments: int) -> list[float]:
    """Cumulative amounts ``s_t = s_f (1 - (1 - t / k)^3)`` for ``t = 1..k``: large early
    steps while the network has redundancy to spare, small ones near the target."""
    return [target * (1 - (1 - t / increments) ** 3) for t in range(1, increments + 1)]


def gradual_steps(criterion: str, granularity: str, target: float, increments: int = 4,
                  finetune: Finetune | None = None, *, round_to: int | None = None, seed: int = 0) -> list:
    """Prune and fine-tune steps that reach ``target`` (a fraction of the units there are
    now) in ``increments`` increments.

    A weight step's sparsity counts the weights already zero, so each step asks for the
    cumulative amount; a structured step removes units of the model it is given (already
    smaller), so each asks for the fraction of what is left that reaches the cumulative
    amount: ``1 - (1 - s_t) / (1 - s_{t-1})``.

    Raises:
        StepError: a target outside [0, 1) or fewer than one increment.
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise StepError(f"gradual pruning: target must be a fraction in (0, 1), got {target!r}")
    if isinstance(increments, bool) or not isinstance(increments, int) or not 1 <= increments <= 100:
        raise StepError(f"gradual pruning: increments must be an integer in [1, 100], got {increments!r}")
    finetune = finetune if finetune is not None else Finetune(steps=100)
    steps, prev = [], 0.0
    for s in cubic_schedule(float(target), increments):
        amount = s if granularity == "weight" else 1 - (1 - s) / (1 - prev)
        steps.append(Prune(criterion=criterion, granularity=granularity, sparsity=round(min(amount, 1.0), 6),
                           seed=seed, round_to=round_to if granularity != "weight" else None))
        steps.append(dataclasses.replace(finetune, seed=finetune.seed + len(steps)))
        prev = s
    return steps


__all__ = ["cubic_schedule", "gradual_steps"]
