"""Applying a plan to a base model, with a cache of plan prefixes.

``apply(plan)`` builds a new model step by step; the base is never changed. Every step
kind implements ``build(model, ctx) -> (model, StepReport)`` without changing its
input, so a cached prefix model can be reused: moving the last step's threshold
rebuilds only that step. :func:`apply_with_reports` also returns each step's report.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import PlanError, PrunescopeError, first_line
from core.plan.plan import Plan
from core.plan.report import StepReport
from core.sources.bases import load_base
from core.sources.datasets import get_dataset, stratified_subset
from core.sources.models import get_spec


@dataclass
class ApplyContext:
    """What steps may need besides the model: device, calibration data, donors, and a
    memo of analyses per source model (score histograms, dependency graphs) that lives
    as long as the context and its models."""

    model_name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calib_size: int = 128  # examples in a calibration batch (from the train split)
    _calib: dict = field(default_factory=dict, repr=False)
    _memo: weakref.WeakKeyDictionary[nn.Module, dict] = field(default_factory=weakref.WeakKeyDictionary,
                                                                 repr=False)

    def calibration(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded, stratified batch of training examples ``(x, y)`` on the device."""
        if seed not in self._calib:
            splits = get_dataset(get_spec(self.model_name).dataset)
            idx = stratified_subset(splits.y_train, self.calib_size, seed)
            self._calib[seed] = (splits.x_train[idx].to(self.device), splits.y_train[idx].to(self.device))
        return self._calib[seed]

    def use_calibration(self, seed: int, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Make ``batch`` the calibration batch of ``seed`` (one drawn elsewhere: a sweep's
        worker receives its driver's batch instead of reading the training split)."""
        self._calib[seed] = batch

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        splits = get_dataset(get_spec(self.model_name).dataset)
        return splits.x_train, splits.y_train

    def donor(self, name: str) -> nn.Module:
        """The pristine base of another registered model (shared: do not modify)."""
        return load_base(name, self.device)

    def memo(self, model: nn.Module) -> dict:
        """A dict for facts derived from ``model`` (dropped with the model)."""
        d = self._memo.get(model)
        if d is None:
            d = self._memo[model] = {}
        return d


class PlanCache:
    """LRU of (model, reports) built for plan prefixes, keyed by the prefix's hash."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._d: OrderedDict[str, tuple[nn.Module, tuple[StepReport, ...]]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str) -> tuple[nn.Module, tuple[StepReport, ...]] | None:
        m = self._d.get(key)
        if m is not None:
            self._d.move_to_end(key)
        return m

    def put(self, key: str, model: nn.Module, reports: tuple[StepReport, ...]) -> None:
        if self.max_entries <= 0:
            return
        self._d[key] = (model, reports)
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()


def _check_base(plan: Plan, base: nn.Module, ctx: ApplyContext) -> None:
    """A base given by hand must have the registered model's parameter names and shapes."""
    from core.sources.models import MODELS

    if MODELS.find(plan.model) is None:
        return  # an unregistered name: nothing to compare with
    ref = load_base(plan.model, ctx.device)
    if base is ref:
        return
    have = [(n, tuple(p.shape)) for n, p in base.named_parameters()]
    want = [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
    if have != want:
        diff = next((f"{a} vs {b}" for a, b in zip(have, want) if a != b), f"{len(have)} vs {len(want)} tensors")
        raise PrunescopeError(f"the plan is for model {plan.model!r}, but the base given has other parameters "
                              f"({diff}); pass that model's base, or a plan made for this one")


def apply_with_reports(plan: Plan, base: nn.Module | None = None, *, ctx: ApplyContext | None = None,
                       cache: PlanCache | None = None,
                       progress: Callable[[int, int, str], None] | None = None
                       ) -> tuple[nn.Module, list[StepReport]]:
    """Build the model a plan describes, with the report of every step.

    Args:
        plan: the plan; ``plan.model`` names the base model.
        base: the base model (default: the registered model's pristine base on
            ``ctx.device``). It is never changed.
        ctx: device, calibration data and donors (default: cpu).
        cache: prefix cache; proper prefixes of ``plan`` are stored there and reused.
        progress: called as ``progress(done, total, what)`` before each step.

    Returns:
        ``(model in eval mode, one StepReport per step)``; the base itself for an empty plan.

    Raises:
        PlanError: a step does not fit the model; the message names the step. Any other
            exception is a bug and propagates as it is.
        PrunescopeError: ``ctx`` is for another model than the plan.
    """
    ctx = ctx or ApplyContext(plan.model)
    if ctx.model_name != plan.model:
        raise PrunescopeError(f"the plan is for model {plan.model!r}, the apply context for {ctx.model_name!r}")
    if base is not None:
        _check_base(plan, base, ctx)
    model = base if base is not None else load_base(plan.model, ctx.device)
    n = len(plan.steps)
    start, reports = 0, []
    if cache is not None:
        for k in range(n - 1, 0, -1):
            hit = cache.get(plan.prefix(k).key())
            if hit is not None:
                (model, prior), start = hit, k
                reports = list(prior)
                cache.hits += 1
                break
        else:
            cache.misses += 1
    for i in range(start, n):
        step = plan.steps[i]
        if progress:
            progress(i, n, step.describe())
        if getattr(model, "final", False):  # e.g. an int8 onnxruntime model: nothing can edit it
            raise PlanError(i, step, f"no step can follow {plan.steps[i - 1].describe()!r}: it must be the "
                                     "plan's last step (remove this step, or put it before that one)")
        try:
            model, report = step.build(model, ctx)
        except PlanError:
            raise
        except PrunescopeError as exc:
            raise PlanError(i, step, first_line(exc)) from exc
        model.eval()
        reports.append(report)
        if cache is not None and i < n - 1:
            cache.put(plan.prefix(i + 1).key(), model, tuple(reports))
    if progress:
        progress(n, n, "done")
    return model, reports


def apply(plan: Plan, base: nn.Module | None = None, **kwargs) -> nn.Module:
    """The model a plan describes (see :func:`apply_with_reports`, whose arguments it takes).

    Raises:
        PlanError: a step does not fit the model; the message names the step.
    """
    return apply_with_reports(plan, base, **kwargs)[0]


__all__ = ["ApplyContext", "PlanCache", "PlanError", "apply", "apply_with_reports"]
