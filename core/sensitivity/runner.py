"""What one worker of a sweep holds and does: the source model and the evaluation batch,
sent once (:class:`Payload`), and one :class:`Task` at a time: one layer (or coupled
group) pruned alone at several amounts, or a global amount, on one shard of the subset.

The same :class:`Runner` runs in this process (the local executor) and in each Ray actor,
so both give the same numbers for the same tasks.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import PrunescopeError
from core.ground.memory import keep_freed_memory
from core.ground.outputs import NEST_KINDS, cat_outputs, judged_outputs, map_out
from core.metrics.cost import arch_signature, count_macs, nonzero_counts
from core.metrics.evaluator import Evaluator, QualitySums, quality_sums
from core.metrics.nest import cosine_each, headline_each
from core.plan.build import ApplyContext
from core.sensitivity.prefix import PrefixCache

CHUNK = 1024  # examples per forward: the evaluator's batch, so a one-shard sweep equals its figures


@dataclass
class Payload:
    """Everything a worker needs, sent once: the source model (the current plan's model),
    the evaluation subset, the base's outputs on it, and the calibration batch."""

    model_name: str
    source: nn.Module
    x: torch.Tensor  # evaluation inputs (the subset)
    y: torch.Tensor  # labels
    base_out: torch.Tensor | dict  # the pristine base's outputs on x (a dict of leaves: "dense" / "nest")
    num_classes: int
    task: str  # "classification" | "fidelity"
    seed: int  # seed of the calibration batch and of random criteria
    calibration: tuple[torch.Tensor, torch.Tensor]  # ctx.calibration(seed): scores, and the graph's example
    threads: int | None = None  # torch threads in a remote worker (the driver's count: same sums)
    cache_bytes: int = 1 << 30  # most bytes of recorded activations per worker
    output: str = "logits"  # "logits" | "embedding" | "dense" | "nest": the evaluator's kind
    judged: tuple[str, ...] | None = None  # "dense" / "nest": the leaves judged (None: every judgeable one)
    score: float | None = None  # "detection": the score threshold of a box (None: outputs.SCORE_THRESHOLD)

    def to(self, device: torch.device | str) -> Payload:
        cal = tuple(t.to(device) for t in self.calibration)
        return Payload(self.model_name, copy.deepcopy(self.source).to(device), self.x.to(device), self.y.to(device),
                       map_out(self.base_out, lambda t: t.to(device)), self.num_classes, self.task, self.seed,
                       cal, self.threads, self.cache_bytes, self.output, self.judged, self.score)

    def shard_data(self, shard: tuple[int, int]) -> ShardData:
        """The evaluation data of one shard (what a remote worker receives per shard)."""
        a, b = shard
        return ShardData(self.x[a:b].clone(), self.y[a:b].clone(), map_out(self.base_out, lambda t: t[a:b].clone()))

    def without_data(self) -> Payload:
        """This payload without the evaluation subset (one example stays: MACs are
        counted on it); the shards then travel on their own (:meth:`shard_data`)."""
        return dataclasses.replace(self, x=self.x[:1].clone(), y=self.y[:1].clone(),
                                   base_out=map_out(self.base_out, lambda t: t[:1].clone()))

    def shards(self, n: int) -> list[tuple[int, int]]:
        """``n`` contiguous ranges of the subset, as equal as they can be."""
        n = max(1, min(n, len(self.x)))
        cuts = [round(i * len(self.x) / n) for i in range(n + 1)]
        return [(cuts[i], cuts[i + 1]) for i in range(n)]


@dataclass
class ShardData:
    """One shard of the evaluation subset: inputs, labels and the base's outputs."""

    x: torch.Tensor
    y: torch.Tensor
    base_out: torch.Tensor


@dataclass(frozen=True)
class Task:
    """One unit of work: ``kind`` "layer" prunes ``layer`` alone at each amount, "global"
    prunes every layer at each amount, "source" evaluates the source model itself."""

    kind: str
    criterion: str
    granularity: str
    layer: str | None
    amounts: tuple[float, ...]
    shard: tuple[int, int]
    # a layer task over the whole subset stops after its first amount that changes more than
    # this many points of predictions (None: every amount; see ``SweepSpec.stop_harm``)
    stop_harm: float | None = None


@dataclass
class Point:
    """One model of a task on one shard."""

    amount: float
    sums: QualitySums
    macs: int  # multiply-accumulates per example (dense: masks do not change it)
    params: int  # non-zero parameters
    pruned: int  # units this edit removed (weights for "weight")
    total: int  # units it could remove
    warnings: list[str] = field(default_factory=list)
    changed: float = 0  # examples whose prediction differs from the source model's (dense / nest: summed shares)
    source_cos: float = 0.0  # cosine with the source model's outputs, summed over examples


def changed_modules(source: nn.Module, model: nn.Module) -> list[str]:
    """Modules of ``model`` whose own parameters or buffers differ in shape from
    ``source``'s module of the same name (what structured pruning changed)."""
    src = dict(source.named_modules())
    out = []
    for name, m in model.named_modules():
        s = src.get(name)
        if s is None:
            out.append(name)
            continue
        a = [tuple(t.shape) for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))]
        b = [tuple(t.shape) for t in list(s.parameters(recurse=False)) + list(s.buffers(recurse=False))]
        if a != b:
            out.append(name)
    return out


class Runner:
    """Runs tasks against one payload, keeping what tasks share: each shard's recorded
    source activations, the criteria's weight scores, the structured analysis (in the
    apply context's memo of the source) and a working copy for weight swaps."""

    def __init__(self, payload: Payload, *, remote: bool = False):
        if remote:  # a worker process of its own (a Ray actor): set it up as an entry point would
            keep_freed_memory()
            if payload.threads:
                torch.set_num_threads(payload.threads)
        self.p = payload
        self.ctx = ApplyContext(payload.model_name, payload.x.device)
        self.ctx.use_calibration(payload.seed, payload.calibration)
        self._prefix: dict[tuple, list[PrefixCache]] = {}
        self._weights: dict[str, object] = {}
        self._work: nn.Module | None = None
        self._macs: dict[str, int] = {}
        self._src_counts = nonzero_counts(payload.source)
        self._data: dict[tuple[int, int], ShardData] = {}  # shards received on their own

    def _shard(self, shard: tuple[int, int]) -> ShardData:
        if shard not in self._data:
            self._data[shard] = self.p.shard_data(shard)
        return self._data[shard]

    # --- shared pieces ---
    def _chunks(self, shard: tuple[int, int], starts: list[str]) -> list[PrefixCache]:
        key = (shard, tuple(starts))
        if key not in self._prefix:
            x = self._shard(shard).x
            bounds = list(range(0, len(x), CHUNK))
            budget = self.p.cache_bytes // max(1, len(bounds))
            self._prefix[key] = [PrefixCache(self.p.source, x[i:i + CHUNK], starts, budget) for i in bounds]
        return self._prefix[key]

    @torch.inference_mode()
    def _point(self, amount: float, outs: list[torch.Tensor], chunks: list[PrefixCache], shard: tuple[int, int],
               macs: int, params: int, pruned: int, total: int, warnings=()) -> Point:
        """The point's figures against the labels and the base, and against the source."""
        d = self._shard(shard)
        judge = lambda o: judged_outputs(o, self.p.output, self.p.judged, self.p.score)
        out, src = cat_outputs([judge(o) for o in outs]), cat_outputs([judge(c.output) for c in chunks])
        sums = quality_sums(out, d.base_out, d.y, self.p.task, self.p.num_classes, self.p.output)
        if self.p.output in NEST_KINDS:  # a share of pixels (or of cosine) changed, as a count of examples
            changed = float((1 - headline_each(out, src, self.p.output)).sum())
            cos = float(cosine_each(out, src, self.p.output).sum())
        else:
            changed = int((out.argmax(1) != src.argmax(1)).sum())
            cos = float(torch.nn.functional.cosine_similarity(out.float(), src.float(), dim=1).double().sum())
        return Point(amount, sums, macs, params, pruned, total, list(warnings), changed, cos)

    def _cost(self, model: nn.Module) -> tuple[int, int]:
        sig = arch_signature(model)
        if sig not in self._macs:
            self._macs[sig] = count_macs(model, self.p.x[:1])
        return self._macs[sig], nonzero_counts(model)[1]

    def _weight_scores(self, criterion: str):
        from core.prune.masks import WeightScores

        if criterion not in self._weights:
            self._weights[criterion] = WeightScores(self.p.source, criterion, self.p.seed, self.ctx)
        return self._weights[criterion]

    # --- tasks ---
    def run(self, task: Task, data: ShardData | None = None) -> list[Point]:
        """The points of ``task``; ``data`` is its shard when the payload came without the
        evaluation subset (kept for the next task on that shard)."""
        if data is not None:
            self._data[task.shard] = data
        if task.kind == "source":
            return [self._source(task)]
        if task.kind == "layer" and task.granularity == "weight":
            return self._weight_layer(task)
        points: list[Point] = []
        for a in task.amounts:
            points.append(self._built(task, a, points[-1] if points else None))
            if self._past(task, points[-1]):
                break
        return points

    def _past(self, task: Task, p: Point) -> bool:
        """Whether ``task`` stops at point ``p``: it changed more than ``task.stop_harm``
        points of the source's predictions (an embedding's nearest neighbours are not
        predictions: its sweeps never stop early)."""
        return (task.stop_harm is not None and self.p.output != "embedding"
                and 100 * p.changed / max(1, p.sums.n) > task.stop_harm)

    def _source(self, task: Task) -> Point:
        chunks = self._chunks(task.shard, self._starts(task))
        macs, params = self._cost(self.p.source)
        return self._point(0.0, [c.output for c in chunks], chunks, task.shard, macs, params, 0, 0)

    def _starts(self, task: Task) -> list[str]:
        # every layer of a layer sweep shares one recording per shard
        from core.prune.masks import prunable_layers

        return list(prunable_layers(self.p.source))

    def _weight_layer(self, task: Task) -> list[Point]:
        """One layer's weights pruned alone: its weight is swapped into one working copy
        (no copy of the model per point) and only what runs after it is recomputed."""
        scores = self._weight_scores(task.criterion)
        if self._work is None:
            self._work = copy.deepcopy(self.p.source)
        layer = dict(self._work.named_modules())[task.layer]
        orig = layer.weight
        zeros_before = orig.numel() - int(torch.count_nonzero(orig))
        chunks = self._chunks(task.shard, self._starts(task))
        macs = self._cost(self.p.source)[0]
        points = []
        try:
            for a in task.amounts:
                nw = scores.pruned(task.layer, a)
                zeros = nw.numel() - int(torch.count_nonzero(nw))
                layer.weight = nn.Parameter(nw, requires_grad=False)
                outs = [c.run(self._work, [task.layer]) for c in chunks]
                params = self._src_counts[1] - (zeros - zeros_before)
                points.append(self._point(a, outs, chunks, task.shard, macs, params, zeros, nw.numel()))
                if self._past(task, points[-1]):
                    break
        finally:
            layer.weight = orig
        return points

    def _built(self, task: Task, amount: float, before: Point | None = None) -> Point:
        """A real ``Prune`` step built on the source (structured, or a global amount). When it
        removes as many units as ``before`` (the task's point at the amount before) and leaves the
        same MACs and parameters, it is the same model (the step removes a layer's units in
        its criterion's order): ``before``'s figures are kept, with no forward run."""
        from core.prune.step import LayerOverride, Prune

        if task.kind == "layer":
            step = Prune(criterion=task.criterion, granularity=task.granularity, seed=self.p.seed,
                         layers=(LayerOverride(task.layer, sparsity=amount),))
        else:
            step = Prune(criterion=task.criterion, granularity=task.granularity, seed=self.p.seed, sparsity=amount)
        model, report = step.build(self.p.source, self.ctx)
        model.eval()
        macs, params = self._cost(model)
        if before is not None and (before.pruned, before.macs, before.params) == (report.pruned, macs, params):
            return dataclasses.replace(before, amount=amount, warnings=list(report.warnings))
        chunks = self._chunks(task.shard, self._starts(task))
        changed = changed_modules(self.p.source, model) if task.granularity != "weight" else \
            list(report.thresholds)
        with torch.inference_mode():
            outs = [c.run(model, changed) if task.kind == "layer" else model(c.x) for c in chunks]
        return self._point(amount, outs, chunks, task.shard, macs, params, report.pruned, report.total,
                           report.warnings)


def payload_for(model: nn.Module, evaluator: Evaluator, ctx: ApplyContext, subset: str = "quick",
                seed: int = 0) -> Payload:
    """The snapshot a sweep of ``model`` runs on: a private copy of the model, the subset of
    the evaluator's eval set, the base's outputs on it and the calibration batch of
    ``seed`` (everything a worker needs). Take it in the thread that owns ``model``: the
    sweep then reads only the copy.

    Raises:
        PrunescopeError: a quantised (final) model; an unknown subset.
    """
    from core.sources.bases import clone_model

    if getattr(model, "final", False):
        raise PrunescopeError("the plan ends in a quantize step; sensitivity sweeps prune float models "
                              "(undo the quantize step, sweep, then quantize)")
    x, y = evaluator.evalset.subset(subset)
    # A private copy: the sweep traces its source with hooks, and the page may run its own
    # model meanwhile (a sweep runs in a background thread).
    return Payload(ctx.model_name, clone_model(model).eval(), x, y, evaluator.base_outputs(subset),
                   evaluator.evalset.num_classes, evaluator.task, seed, ctx.calibration(seed),
                   threads=torch.get_num_threads(), output=evaluator.output, judged=evaluator.judged,
                   score=evaluator.score)


__all__ = ["Payload", "ShardData", "Task", "Point", "Runner", "changed_modules", "CHUNK", "payload_for"]
