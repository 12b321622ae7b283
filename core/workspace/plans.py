"""A Workspace: one person's session with one base model.

It owns the read-only base, the eval set on the device, the current plan with the
report of each of its steps (what each step decided), the undo/redo history (a list
of plans) and a log of every evaluated plan with its metrics. It never changes the
base: each plan is applied to a copy.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.errors import PrunescopeError
from core.ground.constraints import Interval, check_args
from core.ground.device import check_precision, pick_device
from core.metrics import Evaluator, Metrics
from core.plan import ApplyContext, Plan, PlanCache, Step, StepReport, apply, apply_with_reports
from core.sources.bases import clone_model, load_base
from core.sources.datasets import EvalSet, get_dataset
from core.sources.models import ModelSpec, get_spec
from core.workspace.analyses import Analyses
from core.workspace.live import LiveReadouts

if TYPE_CHECKING:
    pass


def _tuples(v):
    """A sweep key read back from JSON (lists) as the tuple it was."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


_ARGS = {"quick_size": Interval(1, 1_000_000, integer=True), "latency_batch": Interval(1, 65_536, integer=True),
         "latency_time": Interval(0, 60, closed="right")}  # seconds
ADJUST_SECONDS = 3.0  # edits of one control closer than this are one adjustment (one history entry)
_clock = time.monotonic  # when an edit commits (a seam: tests give it a clock they move)
_HISTORY = threading.RLock()  # held while a history moves (check and commit only: quick)


@dataclass
class LogEntry:
    """One evaluated plan."""

    time: float  # unix seconds
    plan: Plan
    metrics: Metrics


class Workspace(Analyses, LiveReadouts):
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
        self.listeners: list[Callable[[Workspace], None]] = []  # called after the plan or history moves
        self._sweeps_data: tuple | None = None  # (sweep keys, their plain data): session_entry's memo
        self.sweeps: dict[tuple, object] = {}  # finished sensitivity sweeps and criteria curves (core.sensitivity)

    # --- the plan and its history ---
    @property
    def plan(self) -> Plan:
        return self.history[self.pos]

    @property
    def name(self) -> str:
        return self.spec.name

    def set_plan(self, plan: Plan, *, progress: Callable | None = None, adjust: str | None = None,
                 expect: str | None = None) -> nn.Module | None:
        """Make ``plan`` current (a new history entry, redo branch dropped).

        The plan is applied first; if it fails, nothing changes and the error is raised.
        ``adjust`` names a control being moved (a slider's key): consecutive edits with the
        same name, less than ``ADJUST_SECONDS`` apart and with no other edit or undo
        between them, are one adjustment and replace its history entry instead of adding
        one each (the log of evaluated plans keeps them all).
        ``expect``: the key of the plan the edit was made on (a job's start); when another plan is
        current at commit (an undo came first), nothing changes and None is returned (checked
        and committed as one step with respect to :meth:`undo`, :meth:`redo` and other edits).

        Raises:
            PlanError: a step does not fit the model.
            PrunescopeError: the plan is for another model.
        """
        if not isinstance(plan, Plan):
            raise PrunescopeError(f"set_plan needs a Plan, got {type(plan).__name__}")
        if plan.model != self.spec.name:
            raise PrunescopeError(f"this plan is for model {plan.model!r}, the workspace holds {self.spec.name!r}")
        if plan == self.plan and expect in (None, plan.key()):
            return self.model
        model, reports = self._build(plan, progress)
        with _HISTORY:
            if expect is not None and self.plan.key() != expect:
                return None
            now = _clock()
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
        with _HISTORY:
            self._adjusting, moved = None, self.can_undo
            self.pos -= moved
        if moved:
            self._changed()
        return self.plan

    def redo(self) -> Plan:
        with _HISTORY:
            self._adjusting, moved = None, self.can_redo
            self.pos += moved
        if moved:
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
        figures still carry it when this architecture is already timed in the same conditions
        and not noisily (``Evaluator.timed_pair``: masks keep shapes); else it is timed anew.
        """
        key = self._metrics_key(self.plan, subset)
        m = self._metrics.get(key)
        if m is None:
            m = self.evaluator.evaluate(self._current(), subset, latency=False, forward=self.quick_forward(subset))
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
        """The base model's metrics. Its latency is the base half of the latest pair timed
        beside a model of its architecture (a masked plan, or itself) in today's conditions:
        never a timing of the base alone, so the Model page shows the base the masked plans
        are compared with."""
        key = self._metrics_key(Plan(self.spec.name), subset)
        m = self._metrics.get(key)
        if m is None:
            m = self.evaluator.evaluate(self.base, subset, latency=False)
        if m.latency is None or not m.latency.reliable or m.latency.conditions() != self.evaluator.conditions():
            pair = self.evaluator.timed_pair(self.base, noisy_ok=True)
            if pair is None and latency and m.latency is None:
                pair = self.evaluator.latency_pair(self.base)
            if pair is not None and m.latency not in pair:  # (the empty plan's own timing is either half)
                m = dataclasses.replace(m, latency=pair[0], base_latency=pair[0])
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
        # the quick subset through the live prefix where it pays: measured plans (an automatic plan's
        # tries, the greedy's candidates) differ from the last one in a few layers
        m = self.evaluator.evaluate(model, subset, latency=latency, forward=self.quick_forward(subset))
        self._metrics[key] = m
        return m
