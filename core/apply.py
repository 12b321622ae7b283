"""Applying a plan to a base model, with a cache of plan prefixes.

``apply(plan)`` builds a new model step by step; the base is never changed. Every
step kind implements ``build(model, ctx) -> model`` without changing its input, so
a cached prefix model can be reused: moving the last step's threshold rebuilds only
that step.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .data import get_dataset, stratified_subset
from .models import get_spec, load_base
from .plan import Plan, Prune, Step


class PlanError(ValueError):
    """A step of a plan could not be applied; the message names the step."""

    def __init__(self, index: int, step: Step, reason: str):
        self.index, self.step, self.reason = index, step, reason
        super().__init__(f"step {index + 1} ({step.describe()}): {reason}")


@dataclass
class ApplyContext:
    """What steps may need besides the model: device, calibration data, donors."""

    model_name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calib_size: int = 128  # examples in a calibration batch (from the train split)
    _calib: dict = field(default_factory=dict, repr=False)

    def calibration(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded, stratified batch of training examples ``(x, y)`` on the device."""
        if seed not in self._calib:
            splits = get_dataset(get_spec(self.model_name).dataset)
            idx = stratified_subset(splits.y_train, self.calib_size, seed)
            self._calib[seed] = (splits.x_train[idx].to(self.device), splits.y_train[idx].to(self.device))
        return self._calib[seed]

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        splits = get_dataset(get_spec(self.model_name).dataset)
        return splits.x_train, splits.y_train

    def donor(self, name: str) -> nn.Module:
        """The pristine base of another registered model (shared: do not modify)."""
        return load_base(name, self.device)


def _build_prune(step: Prune, model: nn.Module, ctx: ApplyContext) -> nn.Module:
    if step.granularity == "weight":
        from .masks import apply_weight_prune

        return apply_weight_prune(step, model, ctx)
    from .structured import apply_structured_prune

    return apply_structured_prune(step, model, ctx)


Prune.build = _build_prune  # type: ignore[attr-defined]


class PlanCache:
    """LRU of models built for plan prefixes, keyed by the prefix's hash."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._d: "OrderedDict[str, nn.Module]" = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str) -> nn.Module | None:
        m = self._d.get(key)
        if m is not None:
            self._d.move_to_end(key)
        return m

    def put(self, key: str, model: nn.Module) -> None:
        if self.max_entries <= 0:
            return
        self._d[key] = model
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()


def apply(plan: Plan, base: nn.Module | None = None, *, ctx: ApplyContext | None = None,
          cache: PlanCache | None = None,
          progress: Callable[[int, int, str], None] | None = None) -> nn.Module:
    """Build the model a plan describes.

    Args:
        plan: the plan; ``plan.model`` names the base model.
        base: the base model (default: the registered model's pristine base on
            ``ctx.device``). It is never changed.
        ctx: device, calibration data and donors (default: cpu).
        cache: prefix cache; proper prefixes of ``plan`` are stored there and reused.
        progress: called as ``progress(done, total, what)`` before each step.

    Returns:
        The built model in eval mode (the base itself for an empty plan).

    Raises:
        PlanError: a step does not fit the model; the message names the step.
    """
    ctx = ctx or ApplyContext(plan.model)
    model = base if base is not None else load_base(plan.model, ctx.device)
    n = len(plan.steps)
    start = 0
    if cache is not None:
        for k in range(n - 1, 0, -1):
            hit = cache.get(plan.prefix(k).key())
            if hit is not None:
                model, start = hit, k
                cache.hits += 1
                break
        else:
            cache.misses += 1
    for i in range(start, n):
        step = plan.steps[i]
        if progress:
            progress(i, n, step.describe())
        try:
            model = step.build(model, ctx)
        except PlanError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
            raise PlanError(i, step, str(exc).strip().splitlines()[0] if str(exc).strip() else
                            exc.__class__.__name__) from exc
        model.eval()
        if cache is not None and i < n - 1:
            cache.put(plan.prefix(i + 1).key(), model)
    if progress:
        progress(n, n, "done")
    return model
