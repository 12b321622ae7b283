"""A Workspace: one person's session with one base model.

It owns the read-only base, the eval set on the device, the current plan with the
report of each of its steps (what each step decided), the undo/redo history (a list
of plans) and a log of every evaluated plan with its metrics. It never changes the
base: each plan is applied to a copy.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from core.sources.datasets import EvalSet, get_dataset
from core.ground.device import check_precision, pick_device
from core.errors import PrunescopeError
from core.metrics import Evaluator, Metrics
from core.sources.bases import clone_model, load_base
from core.sources.models import ModelSpec, get_spec
from core.plan import ApplyContext, Plan, PlanCache, Step, StepReport, apply, apply_with_reports
from core.ground.constraints import Interval, check_args
from core.sensitivity.sweep import DEFAULT_AMOUNTS

if TYPE_CHECKING:
    from core.explain import Changes
    from core.sensitivity import AutoPlan, Curves, Sensitivity, SweepSpec
    from core.sensitivity.runner import Payload


def _tuples(v):
    """A sweep key read back from JSON (lists) as the tuple it was."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


_ARGS = {"quick_size": Interval(1, 1_000_000, integer=True), "latency_batch": Interval(1, 65_536, integer=True),
         "latency_time": Interval(0, 60, closed="right")}  # seconds
ADJUST_SECONDS = 3.0  # edits of one control closer than this are one adjustment (one history entry)


@dataclass
class LogEntry:
    """One evaluated plan."""

    time: float  # unix seconds
    plan: Plan
    metrics: Metrics


class Workspace:
    """One base model, its eval set, the current plan and its history.

    Args:
        model: registry name of the base model.
        device: "auto" (cuda, else mps, else cpu) or a device name.
        quick_size: examples in the quick eval subset used for live updates.
        latency_batch: batch size for latency measurements.
        latency_time: seconds spent timing each new architecture.
        precision: "fp32", or "bf16" / "fp16": models are evaluated and timed under autocast,
            and compared with the base's fp32 outputs (so the base's own figures under bf16
            state what the precision costs); change it with :meth:`set_precision`.
    """

    def __init__(self, model: str, device: str | torch.device | None = "auto", *, quick_size: int = 256,
                 latency_batch: int = 64, latency_time: float = 0.3, cache_entries: int = 4,
                 precision: str = "fp32"):
        check_args("Workspace", _ARGS, quick_size=quick_size, latency_batch=latency_batch, latency_time=latency_time)
        self.spec: ModelSpec = get_spec(model)
        self.device = pick_device(device)
        self.base: nn.Module = load_base(self.spec.name, self.device)
        self.evalset = EvalSet.from_splits(get_dataset(self.spec.dataset), self.device, quick_size)
        self.ctx = ApplyContext(self.spec.name, self.device)
        self.evaluator = Evaluator(self.evalset, self.base, task=self.spec.task,
                                   latency_batch=latency_batch, latency_time=latency_time,
                                   precision=precision)
        self.cache = PlanCache(cache_entries)
        self.history: list[Plan] = [Plan(self.spec.name)]
        self.pos = 0
        self.log: list[LogEntry] = []
        self._base_copy: nn.Module | None = None
        self._adjusting: tuple[str, float, int] | None = None  # (control, when, history position)
        self._model: nn.Module | None = None
        self._reports: list[StepReport] = []
        self._model_key = self.plan.key()
        self._metrics: dict[tuple[str, str], Metrics] = {}
        self._logged: dict[tuple[str, str], Metrics] = {}  # what the log holds per plan and subset
        self.listeners: list[Callable[["Workspace"], None]] = []  # called after the plan or history moves
        self._sweeps_data: tuple | None = None  # (sweep keys, their plain data): session_entry's memo
        self.sweeps: dict[tuple, object] = {}  # finished sensitivity sweeps and criteria curves (core.sensitivity)

    # --- the plan and its history ---
    @property
    def plan(self) -> Plan:
        return self.history[self.pos]

    @property
    def name(self) -> str:
        return self.spec.name

    def set_plan(self, plan: Plan, *, progress: Callable | None = None, adjust: str | None = None) -> nn.Module:
        """Make ``plan`` current (a new history entry, redo branch dropped).

        The plan is applied first; if it fails, nothing changes and the error is raised.
        ``adjust`` names a control being moved (a slider's key): consecutive edits with the
        same name, less than ``ADJUST_SECONDS`` apart and with no other edit or undo
        between them, are one adjustment and replace its history entry instead of adding
        one each (the log of evaluated plans keeps them all).

        Raises:
            PlanError: a step does not fit the model.
            PrunescopeError: the plan is for another model.
        """
        if not isinstance(plan, Plan):
            raise PrunescopeError(f"set_plan needs a Plan, got {type(plan).__name__}")
        if plan.model != self.spec.name:
            raise PrunescopeError(f"this plan is for model {plan.model!r}, the workspace holds {self.spec.name!r}")
        if plan == self.plan:
            return self.model
        model, reports = self._build(plan, progress)
        now = time.monotonic()
        last = self._adjusting
        same = (adjust is not None and last is not None and last[0] == adjust and now - last[1] < ADJUST_SECONDS
                and last[2] == self.pos and self.pos == len(self.history) - 1 and self.pos > 0)
        if same:
            self.history[self.pos] = plan
        else:
            del self.history[self.pos + 1:]
            self.history.append(plan)
            self.pos += 1
        self._adjusting = (adjust, now, self.pos) if adjust is not None else None
        self._model, self._reports, self._model_key = model, reports, plan.key()
        self._changed()
        return model

    def keep_sweep(self, key: tuple, result: object) -> None:
        """Keep a finished sweep in :attr:`sweeps`, published in one step: a new dict
        replaces the old one, so a reader iterating over the old one never sees it change."""
        self.sweeps = {**self.sweeps, key: result}

    def granularities(self) -> list[str]:
        """What this model can be pruned by: "weight" plus each unit granularity its base has
        prunable units of (``core.prune.structured.granularities``, memoised)."""
        from core.prune.structured import granularities

        return granularities(self.base, self.ctx)

    def session_entry(self) -> dict:
        """This workspace's lasting work as plain data for a session file: ``{"history":
        [Plan], "pos", "sweeps": [[key, result dict]]}`` (the finished sweeps, at most 4 MB
        of them, the newest first; serialised once per set of sweeps)."""
        import json

        from core.sensitivity import Sensitivity

        keys = tuple(self.sweeps)
        if self._sweeps_data is None or self._sweeps_data[0] != keys:
            out, size = [], 0
            for key, s in reversed(list(self.sweeps.items())):
                if isinstance(s, Sensitivity):
                    item = [list(key), s.to_dict()]
                    n = len(json.dumps(item))
                    if size + n > 4 << 20:
                        break
                    out.append(item)
                    size += n
            self._sweeps_data = (keys, out)
        return {"history": list(self.history), "pos": self.pos, "sweeps": self._sweeps_data[1]}

    def restore_session(self, entry: dict) -> None:
        """Take a saved history and its finished sweeps (:meth:`session_entry`'s shape, as
        read back by ``core.io.sessions.load_session``). A sweep that does not read back is
        left out with a warning; the plans were checked when the file was read."""
        import warnings

        from core.sensitivity import Sensitivity

        self.history, self.pos = list(entry["history"]), entry["pos"]
        sweeps = dict(self.sweeps)
        for key, data in entry.get("sweeps", []):
            try:
                sweeps[_tuples(key)] = Sensitivity.from_dict(data)
            except PrunescopeError as exc:
                warnings.warn(f"prunescope: a saved sweep of {self.name} was left out: {exc}")
        self.sweeps = sweeps

    def notify(self) -> None:
        """Tell the listeners that something worth keeping changed (a finished sweep)."""
        self._changed()

    def _changed(self) -> None:
        """Tell the listeners (e.g. the app's autosave) that the plan or history moved."""
        for fn in list(self.listeners):
            fn(self)

    def add_step(self, step: Step, **kw) -> nn.Module:
        return self.set_plan(self.plan.then(step), **kw)

    def replace_step(self, index: int, step: Step, **kw) -> nn.Module:
        return self.set_plan(self.plan.replace(index, step), **kw)

    def remove_step(self, index: int, **kw) -> nn.Module:
        return self.set_plan(self.plan.without(index), **kw)

    def reset(self) -> nn.Module:
        """Back to the base model (as a new history entry, so it can be undone)."""
        return self.set_plan(Plan(self.spec.name))

    @property
    def can_undo(self) -> bool:
        return self.pos > 0

    @property
    def can_redo(self) -> bool:
        return self.pos < len(self.history) - 1

    def undo(self) -> Plan:
        self._adjusting = None
        if self.can_undo:
            self.pos -= 1
            self._changed()
        return self.plan

    def redo(self) -> Plan:
        self._adjusting = None
        if self.can_redo:
            self.pos += 1
            self._changed()
        return self.plan

    def goto(self, plan: Plan) -> nn.Module:
        """Restore a plan (e.g. from the log): a new history entry."""
        return self.set_plan(plan)

    # --- models, reports and metrics ---
    def _own_base(self) -> nn.Module:
        """This workspace's copy of the base, made on first use: what an empty plan hands
        out, so editing it never reaches the base shared by every session."""
        if self._base_copy is None:
            self._base_copy = clone_model(self.base)
        return self._base_copy

    def _build(self, plan: Plan, progress=None) -> tuple[nn.Module, list[StepReport]]:
        if not plan.steps:
            return self.base, []  # internal, read-only use; ``model`` hands out a copy
        # Drop the old current model first so peak memory stays at base + one model.
        if self._model is not self.base and self._model_key != plan.key():
            self._model = None
        return apply_with_reports(plan, self.base, ctx=self.ctx, cache=self.cache, progress=progress)

    def _ensure_built(self) -> None:
        key = self.plan.key()
        if self._model is None or self._model_key != key:
            self._model = None
            self._model, self._reports = self._build(self.plan)
            self._model_key = key

    def _current(self) -> nn.Module:
        """The current plan's model for read-only use inside the workspace (the shared base
        itself for an empty plan: no copy)."""
        self._ensure_built()
        return self._model

    @property
    def model(self) -> nn.Module:
        """The current plan's model (built on demand).

        With an empty plan it is this workspace's own copy of the base, made on first use,
        so an edit made in a notebook never reaches the base that other workspaces share
        (``self.base``: read it, never change it).
        """
        self._ensure_built()
        return self._own_base() if self._model is self.base else self._model

    @property
    def float_model(self) -> nn.Module:
        """The current model as PyTorch modules: for a plan ending in a quantize step (an
        onnxruntime model), the float model it quantised; else :attr:`model`."""
        m = self.model
        return m.reference if getattr(m, "final", False) else m

    @property
    def reports(self) -> list[StepReport]:
        """What each step of the current plan decided (one report per step, in order)."""
        self._ensure_built()
        return list(self._reports)

    def model_before(self, index: int) -> nn.Module:
        """The model step ``index`` of the current plan was applied to (the base for 0,
        which is shared: read it, never change it).

        Raises:
            PrunescopeError: no such step.
        """
        n = len(self.plan.steps)
        if not isinstance(index, int) or not 0 <= index <= n:
            raise PrunescopeError(f"the plan has {n} step(s); no model before step {index!r}")
        if index == 0:
            return self.base
        if index == n:
            return self.float_model  # a quantised model as the float modules it was made of
        return apply(self.plan.prefix(index), self.base, ctx=self.ctx, cache=self.cache)

    def _metrics_key(self, plan: Plan, subset: str) -> tuple:
        # latency is part of the figures: a new batch size or precision is a new measurement
        return (plan.key(), subset, self.evaluator.latency_batch, self.evaluator.precision)

    @property
    def precision(self) -> str:
        """The evaluation precision: "fp32", "bf16" or "fp16" (autocast)."""
        return self.evaluator.precision

    def set_precision(self, precision: str) -> None:
        """Evaluate and time models under ``precision`` from now on (figures of each
        precision are cached apart; the plan and its models are unchanged).

        Raises:
            PrunescopeError: not one of "fp32", "bf16", "fp16".
        """
        self.evaluator.precision = check_precision(precision)

    def metrics(self, subset: str = "quick", *, latency: bool = True,
                progress: Callable[[int, int], None] | None = None) -> Metrics:
        """Metrics of the current plan's model (cached per plan, subset and latency batch; logged).

        Metrics cached without latency get only the latency added (timed interleaved with
        the base; ``progress(done, total)`` follows its rounds). Without ``latency`` the
        figures still carry it when this architecture is already timed (masks keep shapes).
        """
        key = self._metrics_key(self.plan, subset)
        m = self._metrics.get(key)
        if m is None:
            m = self.evaluator.evaluate(self._current(), subset, latency=False)
            self._metrics[key] = m
        if m.latency is None:
            pair = self.evaluator.timed_pair(self._current())
            if pair is None and latency:
                pair = self.evaluator.latency_pair(self._current(), progress=progress)
            if pair is not None:
                old, m = m, dataclasses.replace(m, latency=pair[1], base_latency=pair[0])
                self._metrics[key] = m
                for i, e in enumerate(self.log):  # the same evaluation, now with its latency: one entry
                    if e.metrics is old:
                        self.log[i] = dataclasses.replace(e, metrics=m)
                        self._logged[key] = m
        if self._logged.get(key) is not m:
            self._logged[key] = m
            self.log.append(LogEntry(time.time(), self.plan, m))
        return m

    def forget_latency(self) -> None:
        """Time the current model (and the base beside it) anew on the next
        ``metrics(latency=True)``: for a timing the machine's load spoiled. Every cached
        figure that carried those timings loses them; the log keeps what was shown."""
        dropped = {id(x) for x in self.evaluator.forget_latency(self._current())}
        for key, m in list(self._metrics.items()):
            if id(m.latency) in dropped or id(m.base_latency) in dropped:
                self._metrics[key] = dataclasses.replace(m, latency=None, base_latency=None)

    def base_metrics(self, subset: str = "quick", *, latency: bool = True) -> Metrics:
        key = self._metrics_key(Plan(self.spec.name), subset)
        m = self._metrics.get(key)
        if m is None:
            m = self.evaluator.evaluate(self.base, subset, latency=latency)
        elif latency and m.latency is None:
            lat = self.evaluator.latency(self.base)
            m = dataclasses.replace(m, latency=lat, base_latency=lat)
        self._metrics[key] = m
        return m

    def evaluate_plan(self, plan: Plan, subset: str = "quick", *, latency: bool = True) -> Metrics:
        """Metrics of any plan of this model without making it current (cached per plan,
        subset and latency batch, with the current plan's figures).

        Raises:
            PrunescopeError: the plan is for another model; PlanError: a step does not fit.
        """
        if plan.model != self.spec.name:
            raise PrunescopeError(f"this plan is for model {plan.model!r}, the workspace holds {self.spec.name!r}")
        key = self._metrics_key(plan, subset)
        m = self._metrics.get(key)  # the same cache as metrics(): a plan evaluated once is not run again
        if m is not None and (m.latency is not None or not latency):
            return m
        model = apply(plan, self.base, ctx=self.ctx, cache=self.cache)
        m = self.evaluator.evaluate(model, subset, latency=latency)
        self._metrics[key] = m
        return m

    # Analysis of the current model: the analysis layer takes (model, data, context); the
    # workspace hands it its own.

    def guides(self, container: str | None = None, seed: int = 0, progress: Callable | None = None):
        """The surgery guides of the current model (``core.surgery.guides.compute_guides``:
        influence, CKA, drop-one accuracy), cached with the model."""
        from core.surgery.guides import compute_guides

        return compute_guides(self.model, self.evaluator, self.ctx, container, seed, progress, name=self.name)

    def cached_guides(self, container: str | None = None, seed: int = 0):
        """The guides already computed for the current model, else None (free)."""
        from core.surgery.guides import cached_guides

        return cached_guides(self.model, self.ctx, container, seed, name=self.name)

    def suggest_cut(self, k: int = 1, container: str | None = None, seed: int = 0) -> dict:
        """The ``k`` blocks of the current model whose removal costs least
        (``core.surgery.guides.suggest_cut``)."""
        from core.surgery.guides import suggest_cut

        return suggest_cut(self.model, self.evaluator, self.ctx, k, container, seed, name=self.name)

    # Sensitivity: the sweeps run on the current plan's model; the workspace keeps the finished
    # ones in ``sweeps`` (published in one step, ``keep_sweep``).

    def layer_names(self, granularity: str) -> list[str]:
        """The layers a sweep of the current model visits (``core.sensitivity.layer_names``).

        Raises:
            PrunescopeError: an unknown granularity, or one the model has no units of.
        """
        from core.sensitivity import layer_names

        return layer_names(self.model, granularity, self.ctx)

    def sensitivity_spec(self, criterion: str = "l1", granularity: str = "weight", amounts=DEFAULT_AMOUNTS,
                         subset: str = "quick", *, layers: list[str] | None = None, shards: int = 1,
                         seed: int = 0) -> SweepSpec:
        """A sensitivity sweep of the current plan's model, checked; runs nothing
        (``core.sensitivity.sensitivity_spec``). With :meth:`sweep_payload` it is the
        snapshot a background job runs (``core.sensitivity.run_sweep``); a complete result is
        kept with ``keep_sweep(spec.key, result)``.

        Raises:
            PrunescopeError: see :meth:`sensitivity`.
        """
        from core.sensitivity import sensitivity_spec

        return sensitivity_spec(self.model, self.ctx, self.plan, criterion, granularity, amounts, subset,
                                layers=layers, shards=shards, seed=seed)

    def curves_spec(self, criteria, granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                    seed: int = 0) -> SweepSpec:
        """A criteria comparison on the current plan's model, checked; runs nothing
        (``core.sensitivity.curves_spec``; see :meth:`sensitivity_spec`).

        Raises:
            PrunescopeError: see :meth:`criteria_curves`.
        """
        from core.sensitivity import curves_spec

        return curves_spec(self.model, self.ctx, self.plan, criteria, granularity, amounts, subset, seed=seed)

    def sweep_payload(self, spec: SweepSpec) -> Payload:
        """What a sweep of ``spec`` runs on, taken now: a copy of the current model, the
        subset, the base's outputs and the calibration batch (``core.sensitivity.payload_for``).

        Raises:
            PrunescopeError: the plan is not ``spec``'s, or ends in a quantize step.
        """
        from core.sensitivity import payload_for

        if spec.plan != self.plan.key():
            raise PrunescopeError("this sweep was asked for on another plan; ask for it again on the current plan")
        return payload_for(self.model, self.evaluator, self.ctx, spec.subset, spec.seed)

    def _sweep(self, spec: SweepSpec, executor, progress, should_stop):
        """The finished result of ``spec``: kept from before, else run now and kept when complete."""
        from core.sensitivity import run_sweep

        found = self.sweeps.get(spec.key)
        if found is not None:
            return found
        out = run_sweep(spec, self.sweep_payload(spec), executor=executor, progress=progress, should_stop=should_stop)
        if out.complete:
            self.keep_sweep(spec.key, out)
        return out

    def sensitivity(self, criterion: str = "l1", granularity: str = "weight", amounts=DEFAULT_AMOUNTS,
                    subset: str = "quick", *, layers: list[str] | None = None, executor="local", shards: int = 1,
                    seed: int = 0, progress: Callable[[int, int, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Sensitivity:
        """Sweep every prunable layer of the current plan's model over ``amounts``, alone
        (``core.sensitivity.sensitivity``: arguments as there). A complete result is kept in
        :attr:`sweeps` per plan, criterion, granularity, amounts, subset and seed, and
        returned again without running; a stopped one (``complete`` False) is not kept.

        Raises:
            PrunescopeError: unknown criterion, granularity, subset or layer; bad amounts or
                shards; a criterion that does not support the granularity; a quantised plan.
        """
        spec = self.sensitivity_spec(criterion, granularity, amounts, subset, layers=layers, shards=shards, seed=seed)
        return self._sweep(spec, executor, progress, should_stop)

    def criteria_curves(self, criteria, granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick",
                        *, executor="local", seed: int = 0, progress: Callable[[int, int, str], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> Curves:
        """For each criterion, the current model pruned globally at each amount
        (``core.sensitivity.criteria_curves``); a complete result is kept as a sweep's is.

        Raises:
            PrunescopeError: no criterion or an unknown one; unknown granularity or subset; bad
                amounts; a quantised plan.
        """
        return self._sweep(self.curves_spec(criteria, granularity, amounts, subset, seed=seed), executor, progress,
                           should_stop)

    def finished_sweep(self, criterion: str, granularity: str, amounts, subset: str = "quick") -> Sensitivity | None:
        """The finished sensitivity sweep of the current plan with these settings (any seed
        and layers), else None. Free: runs nothing."""
        from core.sensitivity import Sensitivity

        want = (self.plan.key(), criterion, granularity, tuple(sorted(set(amounts))), subset)
        for s in self.sweeps.values():
            if isinstance(s, Sensitivity) and (s.plan, s.criterion, s.granularity, s.amounts, s.subset) == want:
                return s
        return None

    def autoplan(self, *, criterion: str = "l1", granularity: str = "weight", max_drop: float | None = None,
                 max_macs: float | None = None, max_params: float | None = None, max_latency: float | None = None,
                 sens: Sensitivity | None = None, amounts=DEFAULT_AMOUNTS, subset: str = "quick", executor="local",
                 tries: int = 8, progress: Callable[[int, int, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> AutoPlan:
        """Per-layer amounts after the current plan that meet one target, measured on
        ``subset`` (``core.sensitivity.autoplan``). The plan is not changed:
        ``ws.set_plan(result.plan)`` makes the result current.

        Args:
            sens: a sweep of the current plan with this criterion and granularity (else it
                is taken from :attr:`sweeps`, or run with ``amounts``, ``executor``,
                ``progress`` and ``should_stop`` and kept).
            The others: as ``core.sensitivity.autoplan``.

        Raises:
            PrunescopeError: no target or several; a target out of range; MACs targets with
                weight granularity; a sweep of another plan, or one stopped early.
        """
        from core.sensitivity import autoplan, check_target

        check_target(granularity, max_drop, max_macs, max_params, max_latency)  # before a sweep runs
        if sens is None:
            sens = self.sensitivity(criterion, granularity, amounts, subset, executor=executor, progress=progress,
                                    should_stop=should_stop)
        return autoplan(self.plan, sens, lambda plan, latency: self.evaluate_plan(plan, subset, latency=latency),
                        self.base_metrics(subset, latency=False), criterion=criterion, granularity=granularity,
                        max_drop=max_drop, max_macs=max_macs, max_params=max_params, max_latency=max_latency,
                        tries=tries)

    # Explain: the current model against the base.

    def changes(self, subset: str = "quick") -> Changes:
        """Predictions of the base and the current model on ``subset`` (``core.explain.changes``)."""
        from core.explain import changes

        return changes(self.model, self.evaluator, subset)

    def divergence(self, subset: str = "quick") -> list[dict]:
        """Linear CKA of each prunable layer's output, base against the current model
        (``core.explain.divergence``).

        Raises:
            PrunescopeError: a quantised plan (no PyTorch modules to compare).
        """
        from core.explain import divergence

        return divergence(self.model, self.evaluator, subset)

    def unit_report(self, layer: str, unit: int, granularity: str = "channel", *, subset: str = "quick",
                    top: int = 12) -> dict:
        """A unit of the base model, and whether the current plan removes it
        (``core.explain.unit_report``).

        Raises:
            PrunescopeError: no such layer or unit.
        """
        from core.explain import unit_report

        return unit_report(self.evaluator, self.ctx, self.plan, self.reports, layer, unit, granularity, subset=subset,
                           top=top)

    def attribution_pair(self, index: int, method: str = "gradient") -> dict:
        """Attribution maps of the base and the current model for example ``index`` of the
        test split (``core.explain.attribution_pair``).

        Raises:
            PrunescopeError: an unknown method; token inputs; a quantised plan.
        """
        from core.explain import attribution_pair

        return attribution_pair(self.model, self.evaluator, index, method)
