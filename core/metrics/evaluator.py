"""Metrics of a model on an evaluation set: quality against the base (``quality.py``), plus cost.

Quality (accuracy, loss, per-class accuracy, fidelity to the base model) is computed
on every call; cost figures come from ``cost.py``, cached by architecture signature. A model
whose output is an embedding (``output="embedding"``: features, not class scores) is judged
by its output cosine and nearest-neighbour recall@k against the base (``fidelity.py``), and
that recall is its headline figure (``Metrics.accuracy``), so every user of the headline
(sensitivity drops, autoplan's target, History, the CLI) reads the meaningful figure.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core.ground.device import autocast, check_precision, peak_memory
from core.ground.outputs import NEST_KINDS, SCORE_THRESHOLD, cat_outputs, judged_outputs
from core.metrics.cost import (
    Latency,
    arch_signature,
    count_macs,
    measure_latency,
    measure_latency_pair,
    nonzero_counts,
    state_dict_bytes,
)
from core.metrics.detection import IOU
from core.metrics.nest import headline_name
from core.metrics.progressive import provisional_fields
from core.metrics.quality import QualitySums, quality_sums
from core.sources.datasets import EvalSet
from core.sources.models import LABELLED_TASKS, OUTPUTS, built_for
from core.sources.own_metric import load_metric, own_figures


@dataclass
class Metrics:
    """Everything the app and the CLI show about one model on one subset."""

    # the headline quality figure (quality_name() says which): top-1 on labels; task "fidelity": agreement
    # with the base's predictions; an embedding: neighbour recall@k with the base
    accuracy: float
    # mean cross-entropy (language model: next-token; extra["perplexity"] = exp(loss)); an embedding: the
    # mean relative output error (output_error)
    loss: float
    per_class_accuracy: list[float]  # index = class (an embedding has none: views do not show it)
    agreement: float  # fraction of examples where the prediction equals the base's (an embedding: neighbour recall)
    output_cosine: float  # mean cosine between this model's and the base's outputs
    params: int  # all parameters
    nonzero_params: int
    sparsity: float  # fraction of prunable weights (Linear/Conv) that are zero
    macs: int  # multiply-accumulates for one example
    size_bytes: int  # bytes of the state dict saved as safetensors
    latency: Latency | None  # forward time of a batch (None when not measured)
    subset: str  # "quick" or "full"
    n: int  # examples evaluated
    shapes_changed: bool = False  # architecture differs from the base (structured / surgery)
    base_latency: Latency | None = None  # the base timed with this model, interleaved (compare with this)
    extra: dict = field(default_factory=dict)
    precision: str = "fp32"  # the forward ran under this precision (bf16 / fp16: autocast); the base's
    # outputs it is compared with are always fp32
    peak_mem_bytes: int | None = None  # peak GPU memory of this evaluation's forwards (None off CUDA)
    output: str = "logits"  # "logits" (class scores) or "embedding" (features, judged against the base's)
    neighbour_recall: float | None = None  # embedding: mean share of the base's k nearest neighbours kept
    recall_k: int | None = None  # embedding: the k of neighbour_recall (10, fewer on a smaller set)
    output_error: float | None = None  # mean relative output error ||out - base|| / ||base||
    provisional: bool = False  # subset "glimpse": a first readout of a tenth of the quick subset, refined later
    interval: tuple[float, float] | None = None  # provisional: 95% interval of the headline (progressive.py)
    # "dense" / "nest" outputs: per judged leaf, its mean cosine and relative error against the base's same
    # leaf (and the pixel agreement of a dense output's class map); None for one (N, K) output
    leaf_figures: dict[str, dict[str, float]] | None = None
    # task "segmentation" (label masks): the headline is the mean IoU of the class map; these are its
    # pixel accuracy and IoU per class of the data (None: the class neither labelled nor predicted here)
    pixel_accuracy: float | None = None
    class_iou: list[float | None] | None = None
    # task "detection" (labelled boxes): the headline is COCO's mAP@0.5:0.95; this is its mAP@0.5
    map50: float | None = None

    def quality_name(self, task: str = "classification") -> str:
        """What :attr:`accuracy`, the headline figure, is for this model of ``task``."""
        if self.output == "embedding":
            return f"neighbour recall@{self.recall_k}"
        if self.class_iou is not None:
            return "mean IoU"
        if self.map50 is not None:
            return "mAP@0.5:0.95"
        if self.output in NEST_KINDS:
            return headline_name(self.output, list(self.leaf_figures or {}))
        return {"language-model": "next-token accuracy", "fidelity": "agreement with the base"}.get(task, "accuracy")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"] = self.latency.to_dict() if self.latency else None
        d["base_latency_ms"] = self.base_latency.to_dict() if self.base_latency else None
        del d["latency"], d["base_latency"]
        return d


class Evaluator:
    """Evaluates models against one eval set and one base model.

    Base outputs are computed once per subset; MACs, size and latency are cached by
    architecture signature.
    """

    def __init__(self, evalset: EvalSet, base: nn.Module, *, task: str = "classification",
                 latency_batch: int = 64, latency_time: float = 0.3, precision: str = "fp32",
                 output: str | None = None, judged: tuple[str, ...] | None = None, metric: str | None = None,
                 score: float | None = None):
        self.evalset = evalset
        self.base = base
        self.task = task
        self.output = output or _registered_output(base)  # "logits" | "embedding" | "dense" | "nest"
        self.judged = judged or _registered_judged(base)  # "dense" / "nest": the leaves judged (None: all)
        self.metric = metric or _registered_extra(base, "metric")  # own_metric.py: a path
        # "detection": boxes scored below this are not detections (None: outputs.SCORE_THRESHOLD)
        self.score = score if score is not None else _registered_extra(base, "score_threshold")
        self._metric_fn: Callable | None = None
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        self.latency_batch = latency_batch
        self.latency_time = latency_time
        self.precision = check_precision(precision)  # models are run (and timed) under it; the base reference is fp32
        self._base_out: dict[str, torch.Tensor] = {}
        self._arch_cache: dict[tuple, object] = {}
        self.pass_seconds: dict[str, float] = {}  # wall seconds of the base's forward of each subset (an estimate)
        self.base_signature = arch_signature(base)

    @torch.inference_mode()
    def outputs(self, model: nn.Module, subset: str = "quick", batch: int = 1024, *,
                precision: str | None = None, forward: Callable | None = None):
        """``model``'s outputs on ``subset``, run under ``precision`` (default: the
        evaluator's), returned in fp32: a tensor, or for a "dense" / "nest" output the
        ``{leaf: tensor}`` of the judged leaves. ``forward(model, x)``: runs the whole subset in
        its own way (e.g. the workspace's prefix reuse) instead of ``model(x)``, and must return the same."""
        x, _ = self.evalset.subset(subset)
        judge = lambda out: judged_outputs(out, self.output, self.judged, self.score)
        with autocast(x.device, precision or self.precision):
            if forward is not None:
                return judge(forward(model, x))
            if len(x) <= batch:
                return judge(model(x))
            return cat_outputs([judge(model(x[i:i + batch])) for i in range(0, len(x), batch)])

    def base_outputs(self, subset: str):
        """The base's fp32 outputs on ``subset``: the reference every precision is compared with."""
        if subset not in self._base_out:
            t0 = time.perf_counter()
            self._base_out[subset] = self.outputs(self.base, subset, precision="fp32")
            self.pass_seconds[subset] = time.perf_counter() - t0
        return self._base_out[subset]

    def expected_seconds(self, subset: str = "quick") -> float:
        """Seconds a forward of ``subset`` is expected to take: the base's glimpse forward timed
        warm (its second run: the first pays one-time costs), scaled to the subset's size, or
        the base's measured pass of ``subset`` when that is shorter. Runs the glimpse twice the
        first time (a tenth of the quick subset each)."""
        if "glimpse_warm" not in self.pass_seconds:
            self.base_outputs("glimpse")
            t0 = time.perf_counter()
            self.outputs(self.base, "glimpse", precision="fp32")
            self.pass_seconds["glimpse_warm"] = time.perf_counter() - t0
        n_glimpse, n = len(self.evalset.glimpse()[1]), len(self.evalset.subset(subset)[1])
        return min(self.pass_seconds["glimpse_warm"] * n / n_glimpse, self.pass_seconds.get(subset, math.inf))

    def _cached(self, kind: str, sig: str, fn):
        key = (kind, sig)
        if key not in self._arch_cache:
            self._arch_cache[key] = fn()
        return self._arch_cache[key]

    def latency(self, model: nn.Module, sig: str | None = None) -> Latency:
        """``model`` timed alone (cached by architecture). Never the reference of another
        timing: every figure the workspace shows comes from :meth:`latency_pair`."""
        sig = sig or arch_signature(model)
        x = self.evalset.quick()[0]
        return self._cached(("lat", self.latency_batch, self.precision), sig,
                            lambda: measure_latency(model, x, self.latency_batch, self.latency_time,
                                                    precision=self.precision))

    def conditions(self) -> tuple:
        """(batch size, threads, device, precision) a timing made now would have."""
        return self.latency_batch, torch.get_num_threads(), str(self.evalset.quick()[0].device), self.precision

    def _pair_key(self, sig: str) -> tuple:
        return ("latpair", self.latency_batch, self.precision), sig

    def timed_pair(self, model: nn.Module, sig: str | None = None, *,
                   noisy_ok: bool = False) -> tuple[Latency, Latency] | None:
        """The (base, model) pair already timed for ``model``'s architecture when it may be
        reused for this model: timed in the conditions of now (batch, threads, device,
        precision) and neither half noisy nor of too few runs (``Latency.reliable``; with
        ``noisy_ok`` the latest pair in these conditions, reliable or not); else None. Never
        times anything. A masked model has the base's architecture, so a pair timed beside
        one masked plan serves the others while it is reliable."""
        got = self._arch_cache.get(self._pair_key(sig or arch_signature(model)))
        now = self.conditions()
        if got is None or any((not noisy_ok and not lat.reliable) or lat.conditions() != now for lat in got):
            return None
        return got

    def latency_pair(self, model: nn.Module, sig: str | None = None, *,
                     progress: Callable[[int, int], None] | None = None) -> tuple[Latency, Latency]:
        """(base, model) timed back to back and interleaved, at the same batch, threads and
        device (the base is always timed beside the model, never alone). A pair already timed
        for this architecture is reused when :meth:`timed_pair` allows it, else timed again.

        Args:
            progress: ``(done, total)`` rounds of the interleaved timing (not called when reused).
        """
        sig = sig or arch_signature(model)
        got = self.timed_pair(model, sig)
        if got is None:
            x = self.evalset.quick()[0]
            got = measure_latency_pair(self.base, model, x, self.latency_batch, self.latency_time,
                                       progress=progress, precision=self.precision)
            self._arch_cache[self._pair_key(sig)] = got
        return got

    def forget_latency(self, model: nn.Module) -> list:
        """Drop the cached timings of ``model``'s architecture (with the base timed beside
        it), so the next request times both anew. Returns the dropped Latency objects."""
        sig = arch_signature(model)
        out = []
        for k in ((("lat", self.latency_batch, self.precision), sig), self._pair_key(sig)):
            got = self._arch_cache.pop(k, None)
            out += list(got) if isinstance(got, tuple) else [got] if got is not None else []
        return out

    def own_figures(self, out, base_out, y) -> dict[str, float]:
        """The person's own metric (:attr:`metric`) of outputs ``out``: against the labels (or
        masks), or for task fidelity against the base's outputs ``base_out`` (``core.sources.own_metric``)."""
        if self._metric_fn is None:
            self._metric_fn = load_metric(self.metric)
        labelled = self.task in LABELLED_TASKS
        return own_figures(self._metric_fn, self.metric, out, y if labelled else base_out)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, subset: str = "quick", *, latency: bool = True,
                 forward: Callable | None = None) -> Metrics:
        """All metrics of ``model`` on ``subset`` ("quick", "full", or "glimpse": provisional
        figures of a tenth of the quick subset with 95% intervals, ``progressive.py``).
        ``forward``: see :meth:`outputs`."""
        x, y = self.evalset.subset(subset)
        base_out = self.base_outputs(subset)
        with peak_memory(x.device) as peak:
            out = self.outputs(model, subset, forward=forward)
        q = quality_sums(out, base_out, y, self.task, self.evalset.num_classes, self.output).figures()
        params, nz, sparsity = nonzero_counts(model)
        sig = arch_signature(model)
        example = x[:1]
        macs = self._cached("macs", sig, lambda: count_macs(model, example))
        size = self._cached("size", sig, lambda: state_dict_bytes(model))
        base_lat, lat = self.latency_pair(model, sig) if latency else (None, None)
        extra = {"perplexity": math.exp(min(q["loss"], 700.0))} if self.task == "language-model" else {}
        if self.output == "detection":  # what its figures count as a box: stated with them
            extra.update(score_threshold=SCORE_THRESHOLD if self.score is None else self.score, iou=IOU)
        if self.metric:
            extra["own"] = self.own_figures(out, base_out, y)
        if subset == "glimpse":
            more = provisional_fields(q, out, base_out, y, self.task)
            extra.update(more.pop("extra"))
            q.update(more)
        return Metrics(**q, params=params, nonzero_params=nz,
                       sparsity=sparsity, macs=macs, size_bytes=size, latency=lat, base_latency=base_lat,
                       subset=subset, n=len(x), shapes_changed=sig != self.base_signature, extra=extra,
                       precision=self.precision, peak_mem_bytes=peak["bytes"])


def _registered_extra(base: nn.Module, key: str):
    """``ModelSpec.extra[key]`` of the registered model ``base`` was built as (None: none)."""
    from core.sources.models import MODELS

    spec = MODELS.find(built_for(base) or "")
    return spec.extra.get(key) if spec is not None else None


def _registered_judged(base: nn.Module) -> tuple[str, ...] | None:
    """The leaves the registered model ``base`` was built as says are judged (``ModelSpec.extra
    ["judged"]``); None: every judgeable leaf."""
    got = _registered_extra(base, "judged")
    return tuple(got) if got else None


def _registered_output(base: nn.Module) -> str:
    """The output kind of the registered model ``base`` was built as (``ModelSpec.output``);
    "logits" for a module built some other way."""
    from core.sources.models import MODELS

    spec = MODELS.find(built_for(base) or "")
    return getattr(spec, "output", "logits") if spec is not None else "logits"


__all__ = ["Metrics", "Evaluator", "QualitySums", "quality_sums"]
