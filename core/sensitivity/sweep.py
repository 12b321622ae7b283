"""Sensitivity: every prunable layer (or coupled group) pruned alone over a list of
amounts, and criteria compared by what a global amount does to accuracy.

Each point is the model a ``Prune`` step with that one override gives (the current
plan's model is the source), evaluated on the quick subset (or the full split); a point
equals ``Workspace.evaluate_plan(plan.then(Prune(layers=[{layer: amount}])))``. Weight
points swap one layer's weight into a working copy; structured points build the real
step. Either way only the modules from the first changed one on run again
(:mod:`core.sensitivity.prefix`).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from core.errors import PrunescopeError, echo

from core.sensitivity.executors import get_executor
from core.sensitivity.runner import Payload, Point, Task

DEFAULT_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

Progress = Callable[[int, int, str], None]  # (done, total, what is running)


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
    source: dict  # the unpruned source: accuracy, loss, per-class accuracy, macs, params
    # layer -> points: amount, accuracy, loss, per-class accuracy, agreement and output cosine
    # with the base, changed (fraction of predictions that differ from the source's) and
    # source cosine, macs (per example), params (non-zero), pruned / total units
    layers: dict[str, list[dict]] = field(default_factory=dict)
    complete: bool = True  # False: cancelled; ``layers`` holds the layers finished
    seconds: float = 0.0
    executor: str = "local"
    shards: int = 1

    def drop(self, layer: str) -> list[float]:
        """Accuracy drop in points (percentage points) per amount: source minus point."""
        return [100 * (self.source["accuracy"] - p["accuracy"]) for p in self.layers[layer]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["amounts"] = list(self.amounts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Sensitivity":
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


def _check_amounts(amounts) -> tuple[float, ...]:
    try:
        out = tuple(float(a) for a in amounts)
    except (TypeError, ValueError) as exc:
        raise PrunescopeError(f"amounts must be numbers in [0, 1], got {echo(amounts)}") from exc
    if not out or len(out) > 100 or any(not 0 <= a <= 1 for a in out):
        raise PrunescopeError(f"amounts must be 1 to 100 numbers in [0, 1] (fractions of each layer's units), "
                              f"got {echo(amounts)}")
    return tuple(sorted(set(out)))


def _check_shards(shards) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 10_000:
        raise PrunescopeError(f"shards must be a whole number in [1, 10000], got {echo(shards)}")
    return shards


def payload_for(ws, subset: str = "quick", seed: int = 0) -> Payload:
    """What every worker of a sweep over the current plan's model needs."""
    import torch

    from core.sources.bases import clone_model

    model = ws.model
    if getattr(model, "final", False):
        raise PrunescopeError("the plan ends in a quantize step; sensitivity sweeps prune float models "
                              "(undo the quantize step, sweep, then quantize)")
    x, y = ws.evalset.subset(subset)
    # A private copy: the sweep traces its source with hooks, and the page may run the
    # workspace's model meanwhile (a sweep runs in a background thread).
    return Payload(ws.name, clone_model(model).eval(), x, y, ws.evaluator.base_outputs(subset), ws.evalset.num_classes,
                   ws.spec.task, seed, ws.ctx.calibration(seed), threads=torch.get_num_threads())


def layer_names(ws, granularity: str, seed: int = 0) -> list[str]:
    """The layers a sweep visits: prunable Linear/Conv layers for "weight", unit groups
    (by their override name) for neurons, channels and heads."""
    from core.prune.masks import prunable_layers
    from core.prune.step import GRANULARITIES
    from core.prune.structured import group_info

    if granularity not in GRANULARITIES:
        raise PrunescopeError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {echo(granularity)}")
    if granularity == "weight":
        return list(prunable_layers(ws.model))
    return [g.name for g in group_info(ws.model, granularity, ws.ctx)]


def _run(ws, tasks: list[Task], payload: Payload, executor, progress: Progress | None, should_stop,
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


def sensitivity(ws, criterion: str = "l1", granularity: str = "weight", amounts=DEFAULT_AMOUNTS,
                subset: str = "quick", *, layers: list[str] | None = None, executor="local", shards: int = 1,
                seed: int = 0, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None,
                publish: Callable[[tuple, "Sensitivity"], None] | None = None) -> Sensitivity:
    """Sweep every prunable layer of the current plan's model over ``amounts``, alone.

    Args:
        ws: the workspace; its current plan's model is the source.
        criterion, granularity: what a ``Prune`` step would use.
        amounts: fractions of each layer's units to prune.
        subset: "quick" (live subset) or "full" (the test split).
        layers: only these (default: every prunable layer / group).
        executor: "local", "ray", or an executor object (``RayExecutor(address=...)``).
        shards: split the subset into this many parts per layer (more, smaller tasks).
        progress: ``(done, total, label)`` after each task.
        should_stop: polled between tasks; when it says True the result holds the layers
            finished so far and ``complete`` is False.
        publish: where a complete result goes, as ``publish(key, result)`` (default
            ``ws.keep_sweep``). A sweep run in a background thread passes a collector and
            the page publishes once the job ends, so no page iterates over ``ws.sweeps``
            while a thread fills it.

    A complete result is kept in ``ws.sweeps`` per plan, criterion, granularity, amounts,
    subset and seed, and returned again without running.

    Raises:
        PrunescopeError: unknown criterion, granularity or layer; bad amounts; a
            criterion that does not support the granularity.
    """
    from core.prune.criteria import get_criterion

    get_criterion(criterion)
    amounts, shards = _check_amounts(amounts), _check_shards(shards)
    ws.evalset.subset(subset)
    names = layer_names(ws, granularity, seed)
    if layers is not None:
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise PrunescopeError(f"not prunable at granularity {granularity!r}: {', '.join(map(str, unknown))}; "
                                  f"prunable: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        names = [n for n in names if n in layers]
    plan_key, plan_steps = ws.plan.key(), len(ws.plan.steps)  # read once: the plan may change meanwhile
    key = ("sensitivity", plan_key, criterion, granularity, amounts, subset, seed, tuple(names))
    if key in ws.sweeps:
        return ws.sweeps[key]
    executor = get_executor(executor)
    payload = payload_for(ws, subset, seed)
    parts = payload.shards(shards)
    tasks = [Task("source", criterion, granularity, None, (0.0,), s) for s in parts]
    tasks += [Task("layer", criterion, granularity, n, amounts, s) for n in names for s in parts]
    t0 = time.perf_counter()
    results = _run(ws, tasks, payload, executor, progress, should_stop,
                   lambda t: "the unpruned model" if t.kind == "source" else
                   f"layer {names.index(t.layer) + 1} of {len(names)}: {t.layer}")
    merged = _merge(tasks, results)
    src = merged.get(("source", criterion, None))
    if src is None:  # stopped before the first task finished
        src_fig = {}
    else:
        src_fig = _figures(src[0])
    out = Sensitivity(ws.name, plan_key, plan_steps, criterion, granularity, amounts, subset,
                      len(payload.x), src_fig,
                      {n: [_figures(p) for p in merged[("layer", criterion, n)]]
                       for n in names if ("layer", criterion, n) in merged and src is not None},
                      complete=len(results) == len(tasks), seconds=time.perf_counter() - t0,
                      executor=getattr(executor, "name", type(executor).__name__), shards=shards)
    if out.complete:
        (publish or ws.keep_sweep)(key, out)
    return out


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


def criteria_curves(ws, criteria, granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                    executor="local", seed: int = 0, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    publish: Callable[[tuple, "Curves"], None] | None = None) -> Curves:
    """For each criterion, the current model pruned globally at each amount (one
    ``Prune(criterion, granularity, sparsity=a)`` each): criteria compared by outcome.
    A complete result goes to ``publish(key, result)`` (default ``ws.keep_sweep``; see
    :func:`sensitivity`)."""
    from core.prune.criteria import get_criterion

    criteria = list(dict.fromkeys(criteria))
    if not criteria:
        raise PrunescopeError("criteria: give at least one criterion")
    for c in criteria:
        get_criterion(c)
    amounts = _check_amounts(amounts)
    layer_names(ws, granularity, seed)  # checks the granularity against the model
    plan_key = ws.plan.key()
    key = ("curves", plan_key, tuple(criteria), granularity, amounts, subset, seed)
    if key in ws.sweeps:
        return ws.sweeps[key]
    executor = get_executor(executor)
    payload = payload_for(ws, subset, seed)
    shard = payload.shards(1)[0]
    tasks = [Task("source", criteria[0], granularity, None, (0.0,), shard)]
    tasks += [Task("global", c, granularity, None, amounts, shard) for c in criteria]
    t0 = time.perf_counter()
    results = _run(ws, tasks, payload, executor, progress, should_stop,
                   lambda t: "the unpruned model" if t.kind == "source" else
                   f"criterion {criteria.index(t.criterion) + 1} of {len(criteria)}: {t.criterion}")
    merged = _merge(tasks, results)
    src = merged.get(("source", criteria[0], None))
    out = Curves(ws.name, plan_key, granularity, amounts, subset, _figures(src[0]) if src else {},
                 {c: [_figures(p) for p in merged[("global", c, None)]] for c in criteria
                  if ("global", c, None) in merged},
                 complete=len(results) == len(tasks), seconds=time.perf_counter() - t0)
    if out.complete:
        (publish or ws.keep_sweep)(key, out)
    return out


__all__ = ["Sensitivity", "Curves", "sensitivity", "criteria_curves", "layer_names", "payload_for",
           "DEFAULT_AMOUNTS"]
