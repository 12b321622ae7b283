"""Sensitivity: every prunable layer (or coupled group) pruned alone over a list of
amounts, and criteria compared by what a global amount does to accuracy.

Each point is the model a ``Prune`` step with that one override gives (the current
plan's model is the source), evaluated on the quick subset (or the full split); a point
equals ``Workspace.evaluate_plan(plan.then(Prune(layers=[{layer: amount}])))``. Weight
points swap one layer's weight into a working copy; structured points build the real
step. Either way only the modules from the first changed one on run again
(:mod:`core.sensitivity.prefix`).

A sweep reads what it is given (the model, the evaluator with its eval set and base, the
apply context, the plan), never a workspace, and keeps nothing: it is asked for in two
parts, so a background job can take its snapshot first and run later. A
:class:`SweepSpec` (plain names and numbers, checked; ``spec.key`` is where the finished
result is kept) and a :class:`~core.sensitivity.runner.Payload` (a copy of the model and
the data: :func:`payload_for`) are taken in the caller's thread; :func:`run_sweep` then
reads only those. ``Workspace.sensitivity`` and ``Workspace.criteria_curves`` keep the
finished results in ``ws.sweeps``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from core.errors import PrunescopeError, echo
from core.ground.constraints import Fraction, Interval, Items, Options, check_args
from core.sensitivity.executors import get_executor
from core.sensitivity.runner import Payload, Point, Task, payload_for

if TYPE_CHECKING:
    from torch import nn

    from core.metrics.evaluator import Evaluator
    from core.plan import Plan
    from core.plan.build import ApplyContext

DEFAULT_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

Progress = Callable[[int, int, str], None]  # (done, total, what is running)
SUBSETS = ("quick", "full")
MAX_AMOUNTS = 100


def _figures(p: Point) -> dict:
    n = max(1, p.sums.n)
    return {"amount": p.amount, **p.sums.figures(), "changed": p.changed / n, "source_cosine": p.source_cos / n,
            "macs": p.macs, "params": p.params, "pruned": p.pruned, "total": p.total, "warnings": p.warnings}


@dataclass
class Sensitivity:
    """The result of a sweep: per layer, one point per amount (and the source's figures)."""

    model: str
    plan: str  # key of the plan whose model was swept (the source)
    plan_steps: int  # steps in that plan (0: the base)
    criterion: str
    granularity: str
    amounts: tuple[float, ...]
    subset: str  # "quick" | "full"
    n: int  # examples evaluated per point
    # the unpruned source: accuracy (the headline figure: an embedding's is its neighbour recall, see
    # QualitySums.figures), loss, per-class accuracy, macs, params
    source: dict
    # layer -> points: amount, accuracy, loss, per-class accuracy, agreement and output cosine
    # with the base, changed (fraction of predictions that differ from the source's) and
    # source cosine, macs (per example), params (non-zero), pruned / total units
    layers: dict[str, list[dict]] = field(default_factory=dict)
    complete: bool = True  # False: cancelled; ``layers`` holds the layers finished
    seconds: float = 0.0
    executor: str = "local"
    shards: int = 1
    # None: every layer at every amount. Else a layer's points end at its first amount that
    # changed more than this many points of the source's predictions (``SweepSpec.stop_harm``)
    stop_harm: float | None = None

    def drop(self, layer: str) -> list[float]:
        """Accuracy drop in points (percentage points) per amount: source minus point."""
        return [100 * (self.source["accuracy"] - p["accuracy"]) for p in self.layers[layer]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["amounts"] = list(self.amounts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Sensitivity:
        """A saved sweep (``to_dict``'s output) read back.

        Raises:
            PrunescopeError: not an object with this class's fields (names the difference).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        need = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(d, dict) or not need <= set(d) <= names or not isinstance(d["amounts"], list):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise PrunescopeError(f"a saved sensitivity sweep needs the fields {sorted(need)} (amounts a list), "
                                  f"and at most {sorted(names)}; got {echo(got)}")
        d = dict(d)
        d["amounts"] = tuple(d["amounts"])
        return cls(**d)


@dataclass
class Curves:
    """Accuracy against a global amount, one curve per criterion."""

    model: str
    plan: str
    granularity: str
    amounts: tuple[float, ...]
    subset: str
    source: dict
    curves: dict[str, list[dict]]  # criterion -> points (amount, accuracy, loss, macs, params, ...)
    complete: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["amounts"] = list(self.amounts)
        return d


@dataclass(frozen=True)
class SweepSpec:
    """A sweep asked for and checked: names and numbers only, read in the caller's thread
    (:func:`sensitivity_spec`, :func:`curves_spec`). ``key`` is where its finished result
    is kept (``Workspace.sweeps``)."""

    kind: str  # "sensitivity": each layer alone at each amount; "curves": a global amount per criterion
    model: str  # registry name of the model
    plan: str  # key of the plan whose model is swept (the source)
    plan_steps: int  # steps in that plan (0: the base)
    criteria: tuple[str, ...]  # a sensitivity sweep's one criterion, or the criteria compared
    granularity: str
    amounts: tuple[float, ...]  # sorted, no repeats
    subset: str  # "quick" | "full"
    layers: tuple[str, ...] = ()  # the layers (or groups) a sensitivity sweep visits, in order
    shards: int = 1  # parts of the subset per layer
    seed: int = 0  # seed of the calibration batch and of random criteria
    # a sensitivity sweep for an accuracy budget: a layer stops after its first amount that changes more
    # than this many points of the source's predictions (the larger amounts cannot fit the budget;
    # one shard only, an embedding never stops). None: every amount
    stop_harm: float | None = None

    @property
    def key(self) -> tuple:
        """Where the finished result is kept: per plan, criterion (criteria), granularity,
        amounts, subset, seed (and layers, for a sensitivity sweep)."""
        if self.kind == "curves":
            return ("curves", self.plan, self.criteria, self.granularity, self.amounts, self.subset, self.seed)
        return ("sensitivity", self.plan, self.criteria[0], self.granularity, self.amounts, self.subset, self.seed,
                self.layers) + (() if self.stop_harm is None else (("stop_harm", self.stop_harm),))


def _sorted_amounts(owner: str, amounts) -> tuple[float, ...]:
    """``amounts`` checked (1 to 100 fractions), sorted, without repeats."""
    amounts = tuple(amounts) if isinstance(amounts, (list, tuple)) else amounts
    check_args(owner, {"amounts": Items(Fraction(), min_items=1, max_items=MAX_AMOUNTS)}, amounts=amounts)
    return tuple(sorted({float(a) for a in amounts}))


def layer_names(model: nn.Module, granularity: str, ctx: ApplyContext) -> list[str]:
    """The layers a sweep of ``model`` visits: prunable Linear/Conv layers for "weight",
    unit groups (by their override name) for neurons, channels and heads.

    Raises:
        PrunescopeError: an unknown granularity, or one the model has no units of.
    """
    from core.prune.masks import prunable_layers
    from core.prune.step import GRANULARITIES
    from core.prune.structured import group_info

    if granularity not in GRANULARITIES:
        raise PrunescopeError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {echo(granularity)}")
    if granularity == "weight":
        return list(prunable_layers(model))
    return [g.name for g in group_info(model, granularity, ctx)]


def sensitivity_spec(model: nn.Module, ctx: ApplyContext, plan: Plan, criterion: str = "l1",
                     granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                     layers: list[str] | None = None, shards: int = 1, seed: int = 0,
                     stop_harm: float | None = None) -> SweepSpec:
    """A sensitivity sweep of ``model`` (the model of ``plan``), checked; runs nothing.

    Raises:
        PrunescopeError: unknown criterion, granularity, subset or layer; amounts not 1 to
            100 fractions; shards not an integer in [1, 10000]; stop_harm not points in
            [0, 100], or given with more than one shard.
    """
    from core.prune.criteria import get_criterion

    get_criterion(criterion)
    amounts = _sorted_amounts("sensitivity", amounts)
    check_args("sensitivity", {"shards": Interval(1, 10_000, integer=True), "subset": Options(SUBSETS)},
               shards=shards, subset=subset)
    if stop_harm is not None:
        check_args("sensitivity", {"stop_harm": Interval(0, 100)}, stop_harm=stop_harm)
        if shards != 1:
            raise PrunescopeError("stop_harm needs one shard: a layer stops on what its whole subset shows")
    names = layer_names(model, granularity, ctx)
    if layers is not None:
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise PrunescopeError(f"not prunable at granularity {granularity!r}: {', '.join(map(str, unknown))}; "
                                  f"prunable: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        names = [n for n in names if n in layers]
    return SweepSpec("sensitivity", ctx.model_name, plan.key(), len(plan.steps), (criterion,), granularity, amounts,
                     subset, tuple(names), shards, seed, None if stop_harm is None else float(stop_harm))


def curves_spec(model: nn.Module, ctx: ApplyContext, plan: Plan, criteria, granularity: str = "weight",
                amounts=DEFAULT_AMOUNTS, subset: str = "quick", *, seed: int = 0) -> SweepSpec:
    """A criteria comparison on ``model`` (the model of ``plan``), checked; runs nothing.

    Raises:
        PrunescopeError: no criterion or an unknown one; unknown granularity or subset;
            amounts not 1 to 100 fractions.
    """
    from core.prune.criteria import get_criterion

    criteria = tuple(dict.fromkeys(criteria))
    if not criteria:
        raise PrunescopeError("criteria: give at least one criterion")
    for c in criteria:
        get_criterion(c)
    amounts = _sorted_amounts("criteria_curves", amounts)
    check_args("criteria_curves", {"subset": Options(SUBSETS)}, subset=subset)
    layer_names(model, granularity, ctx)  # checks the granularity against the model
    return SweepSpec("curves", ctx.model_name, plan.key(), len(plan.steps), criteria, granularity, amounts, subset,
                     seed=seed)


def _run(tasks: list[Task], payload: Payload, executor, progress: Progress | None, should_stop,
         label: Callable[[Task], str]) -> dict[int, list[Point]]:
    results: dict[int, list[Point]] = {}
    total = len(tasks)

    def on_result(i: int, points: list[Point]) -> None:
        results[i] = points
        if progress is not None:
            progress(len(results), total, label(tasks[i + 1]) if i + 1 < total else "done")

    if progress is not None and tasks:
        progress(0, total, label(tasks[0]))
    executor.run(payload, tasks, on_result, should_stop or (lambda: False))
    return results


def _merge(tasks: list[Task], results: dict[int, list[Point]]) -> dict[tuple, list[Point]]:
    """Points of every finished (kind, criterion, layer), shards added in task order; a
    key with an unfinished shard is left out."""
    by: dict[tuple, list[int]] = {}
    for i, t in enumerate(tasks):
        by.setdefault((t.kind, t.criterion, t.layer), []).append(i)
    out = {}
    for key, idx in by.items():
        if not all(i in results for i in idx):
            continue
        pts = [dataclasses.replace(p) for p in results[idx[0]]]
        for i in idx[1:]:
            for p, q in zip(pts, results[i]):
                p.sums, p.changed, p.source_cos = p.sums + q.sums, p.changed + q.changed, p.source_cos + q.source_cos
        out[key] = pts
    return out


def _run_layers(spec: SweepSpec, payload: Payload, executor, progress, should_stop) -> Sensitivity:
    criterion, names = spec.criteria[0], list(spec.layers)
    parts = payload.shards(spec.shards)
    tasks = [Task("source", criterion, spec.granularity, None, (0.0,), s) for s in parts]
    tasks += [Task("layer", criterion, spec.granularity, n, spec.amounts, s, spec.stop_harm) for n in names
              for s in parts]
    t0 = time.perf_counter()
    results = _run(tasks, payload, executor, progress, should_stop,
                   lambda t: "the unpruned model" if t.kind == "source" else
                   f"layer {names.index(t.layer) + 1} of {len(names)}: {t.layer}")
    merged = _merge(tasks, results)
    src = merged.get(("source", criterion, None))
    src_fig = {} if src is None else _figures(src[0])  # {}: stopped before the first task finished
    return Sensitivity(spec.model, spec.plan, spec.plan_steps, criterion, spec.granularity, spec.amounts, spec.subset,
                       len(payload.x), src_fig,
                       {n: [_figures(p) for p in merged[("layer", criterion, n)]]
                        for n in names if ("layer", criterion, n) in merged and src is not None},
                       complete=len(results) == len(tasks), seconds=time.perf_counter() - t0,
                       executor=getattr(executor, "name", type(executor).__name__), shards=spec.shards,
                       stop_harm=spec.stop_harm)


def _run_curves(spec: SweepSpec, payload: Payload, executor, progress, should_stop) -> Curves:
    criteria = list(spec.criteria)
    shard = payload.shards(1)[0]
    tasks = [Task("source", criteria[0], spec.granularity, None, (0.0,), shard)]
    tasks += [Task("global", c, spec.granularity, None, spec.amounts, shard) for c in criteria]
    t0 = time.perf_counter()
    results = _run(tasks, payload, executor, progress, should_stop,
                   lambda t: "the unpruned model" if t.kind == "source" else
                   f"criterion {criteria.index(t.criterion) + 1} of {len(criteria)}: {t.criterion}")
    merged = _merge(tasks, results)
    src = merged.get(("source", criteria[0], None))
    return Curves(spec.model, spec.plan, spec.granularity, spec.amounts, spec.subset, _figures(src[0]) if src else {},
                  {c: [_figures(p) for p in merged[("global", c, None)]] for c in criteria
                   if ("global", c, None) in merged},
                  complete=len(results) == len(tasks), seconds=time.perf_counter() - t0)


def run_sweep(spec: SweepSpec, payload: Payload, *, executor="local", progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> Sensitivity | Curves:
    """Run ``spec`` on ``payload`` (:func:`payload_for` of the spec's plan's model, its
    subset and seed). Reads only these two, so it may run in a background thread while
    the model it was copied from changes; it keeps nothing (the caller keeps a complete
    result under ``spec.key``).

    Args:
        executor: "local", "ray", or an executor object (``RayExecutor(address=...)``).
        progress: ``(done, total, label)`` after each task.
        should_stop: polled between tasks; when it says True the result holds the layers
            (criteria) finished so far and ``complete`` is False.

    Returns:
        A :class:`Sensitivity` for a "sensitivity" spec, :class:`Curves` for "curves".
    """
    executor = get_executor(executor)
    run = _run_curves if spec.kind == "curves" else _run_layers
    return run(spec, payload, executor, progress, should_stop)


def sensitivity(model: nn.Module, evaluator: Evaluator, ctx: ApplyContext, plan: Plan, criterion: str = "l1",
                granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                layers: list[str] | None = None, executor="local", shards: int = 1, seed: int = 0,
                progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Sensitivity:
    """Sweep every prunable layer of ``model`` over ``amounts``, alone (``Workspace.sensitivity``
    calls it on the current plan's model and keeps the result).

    Args:
        model: the source (the model of ``plan``; only read: the sweep runs on a copy).
        evaluator: its eval set, base (fidelity is against the base) and task.
        ctx: the apply context (calibration batch, structured analysis).
        plan: the plan whose model ``model`` is (the result says which).
        criterion, granularity: what a ``Prune`` step would use.
        amounts: fractions of each layer's units to prune.
        subset: "quick" (live subset) or "full" (the test split).
        layers: only these (default: every prunable layer / group).
        executor: "local", "ray", or an executor object (``RayExecutor(address=...)``).
        shards: split the subset into this many parts per layer (more, smaller tasks).
        progress: ``(done, total, label)`` after each task.
        should_stop: polled between tasks; when it says True the result holds the layers
            finished so far and ``complete`` is False.

    Raises:
        PrunescopeError: unknown criterion, granularity, subset or layer; bad amounts or
            shards; a criterion that does not support the granularity; a quantised model.
    """
    spec = sensitivity_spec(model, ctx, plan, criterion, granularity, amounts, subset, layers=layers, shards=shards,
                            seed=seed)
    return run_sweep(spec, payload_for(model, evaluator, ctx, subset, seed), executor=executor, progress=progress,
                     should_stop=should_stop)


def criteria_curves(model: nn.Module, evaluator: Evaluator, ctx: ApplyContext, plan: Plan, criteria,
                    granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                    executor="local", seed: int = 0, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Curves:
    """For each criterion, ``model`` pruned globally at each amount (one
    ``Prune(criterion, granularity, sparsity=a)`` each): criteria compared by outcome.
    Arguments as :func:`sensitivity` (``Workspace.criteria_curves`` keeps the result).

    Raises:
        PrunescopeError: no criterion or an unknown one; unknown granularity or subset; bad
            amounts; a quantised model.
    """
    spec = curves_spec(model, ctx, plan, criteria, granularity, amounts, subset, seed=seed)
    return run_sweep(spec, payload_for(model, evaluator, ctx, subset, seed), executor=executor, progress=progress,
                     should_stop=should_stop)


__all__ = ["Sensitivity", "Curves", "SweepSpec", "sensitivity", "criteria_curves", "sensitivity_spec", "curves_spec",
           "run_sweep", "layer_names", "payload_for", "DEFAULT_AMOUNTS"]
