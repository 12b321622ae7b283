"""Metrics of a model on an evaluation set: quality against the base, plus cost.

Quality (accuracy, loss, per-class accuracy, fidelity to the base model) is computed
on every call; cost figures come from ``cost.py``, cached by architecture signature.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.ground.device import autocast, check_precision, peak_memory
from core.metrics.cost import (
    Latency,
    arch_signature,
    count_macs,
    measure_latency,
    measure_latency_pair,
    nonzero_counts,
    state_dict_bytes,
)
from core.sources.datasets import EvalSet
from core.sources.models import LABELLED_TASKS


@dataclass
class Metrics:
    """Everything the app and the CLI show about one model on one subset."""

    accuracy: float  # top-1 on labels (for task "fidelity": agreement with the base)
    loss: float  # mean cross-entropy (language model: next-token; extra["perplexity"] = exp(loss))
    per_class_accuracy: list[float]  # index = class
    agreement: float  # fraction of examples where the prediction equals the base's
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"] = self.latency.to_dict() if self.latency else None
        d["base_latency_ms"] = self.base_latency.to_dict() if self.base_latency else None
        del d["latency"], d["base_latency"]
        return d


@dataclass
class QualitySums:
    """Quality of a model's outputs as sums over examples, so the figures of several
    shards of a subset add up (``a + b``) to those of the whole subset."""

    n: int
    correct: int
    loss_sum: float  # cross-entropy summed over examples
    agree: int  # predictions equal to the base's
    cos_sum: float  # cosine with the base's outputs, summed
    class_ok: list[int]  # correct predictions per class (index = class)
    class_n: list[int]  # examples per class

    def __add__(self, other: QualitySums) -> QualitySums:
        return QualitySums(self.n + other.n, self.correct + other.correct, self.loss_sum + other.loss_sum,
                           self.agree + other.agree, self.cos_sum + other.cos_sum,
                           [a + b for a, b in zip(self.class_ok, other.class_ok)],
                           [a + b for a, b in zip(self.class_n, other.class_n)])

    def figures(self) -> dict:
        """accuracy, loss (mean cross-entropy), per-class accuracy, agreement and output cosine."""
        n = max(1, self.n)
        return {"accuracy": self.correct / n, "loss": self.loss_sum / n,
                "per_class_accuracy": [ok / max(1, c) for ok, c in zip(self.class_ok, self.class_n)],
                "agreement": self.agree / n, "output_cosine": self.cos_sum / n}


def quality_sums(out: torch.Tensor, base_out: torch.Tensor, y: torch.Tensor, task: str,
                 num_classes: int) -> QualitySums:
    """The quality sums of outputs ``out`` against the labels ``y`` (``task``
    "classification", or "language-model": ``y`` is the true next token) or the base's
    predictions (``"fidelity"``), and against the base's outputs ``base_out``: the one place
    these figures are computed."""
    pred, base_pred = out.argmax(1), base_out.argmax(1)
    target = y if task in LABELLED_TASKS else base_pred
    correct = pred == target
    return QualitySums(
        n=len(out), correct=int(correct.sum()),
        loss_sum=float(F.cross_entropy(out.float(), target, reduction="sum")),
        agree=int((pred == base_pred).sum()),
        cos_sum=float(F.cosine_similarity(out.float(), base_out.float(), dim=1).double().sum()),
        class_ok=torch.bincount(target[correct], minlength=num_classes).tolist(),
        class_n=torch.bincount(target, minlength=num_classes).tolist())


class Evaluator:
    """Evaluates models against one eval set and one base model.

    Base outputs are computed once per subset; MACs, size and latency are cached by
    architecture signature.
    """

    def __init__(self, evalset: EvalSet, base: nn.Module, *, task: str = "classification",
                 latency_batch: int = 64, latency_time: float = 0.3, precision: str = "fp32"):
        self.evalset = evalset
        self.base = base
        self.task = task
        self.latency_batch = latency_batch
        self.latency_time = latency_time
        self.precision = check_precision(precision)  # models are run (and timed) under it; the base reference is fp32
        self._base_out: dict[str, torch.Tensor] = {}
        self._arch_cache: dict[tuple, object] = {}
        self.base_signature = arch_signature(base)

    @torch.inference_mode()
    def outputs(self, model: nn.Module, subset: str = "quick", batch: int = 1024, *,
                precision: str | None = None) -> torch.Tensor:
        """``model``'s outputs on ``subset``, run under ``precision`` (default: the
        evaluator's), returned in fp32."""
        x, _ = self.evalset.subset(subset)
        with autocast(x.device, precision or self.precision):
            if len(x) <= batch:
                return model(x).float()
            return torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])

    def base_outputs(self, subset: str) -> torch.Tensor:
        """The base's fp32 outputs on ``subset``: the reference every precision is compared with."""
        if subset not in self._base_out:
            self._base_out[subset] = self.outputs(self.base, subset, precision="fp32")
        return self._base_out[subset]

    def _cached(self, kind: str, sig: str, fn):
        key = (kind, sig)
        if key not in self._arch_cache:
            self._arch_cache[key] = fn()
        return self._arch_cache[key]

    def latency(self, model: nn.Module, sig: str | None = None) -> Latency:
        sig = sig or arch_signature(model)
        x = self.evalset.quick()[0]
        return self._cached(("lat", self.latency_batch, self.precision), sig,
                            lambda: measure_latency(model, x, self.latency_batch, self.latency_time,
                                                    precision=self.precision))

    def latency_pair(self, model: nn.Module, sig: str | None = None, *,
                     progress: Callable[[int, int], None] | None = None) -> tuple[Latency, Latency]:
        """(base, model) timed back to back and interleaved, at the same batch, threads and
        device; an architecture equal to the base's is the base's own timing twice.

        Args:
            progress: ``(done, total)`` rounds of the interleaved timing (not called when cached).
        """
        sig = sig or arch_signature(model)
        if sig == self.base_signature:
            lat = self.latency(self.base, sig)
            return lat, lat
        x = self.evalset.quick()[0]
        return self._cached(("latpair", self.latency_batch, self.precision), sig, lambda: measure_latency_pair(
            self.base, model, x, self.latency_batch, self.latency_time, progress=progress,
            precision=self.precision))

    def forget_latency(self, model: nn.Module) -> list:
        """Drop the cached timings of ``model``'s architecture (and of the base timed with
        it), so the next request times anew. Returns the dropped Latency objects."""
        sig = arch_signature(model)
        how = (self.latency_batch, self.precision)
        keys = [(("lat", *how), sig), (("latpair", *how), sig)]
        if sig != self.base_signature:
            keys.append((("lat", self.latency_batch, self.precision), self.base_signature))
        out = []
        for k in keys:
            got = self._arch_cache.pop(k, None)
            out += list(got) if isinstance(got, tuple) else [got] if got is not None else []
        return out

    def timed_pair(self, model: nn.Module) -> tuple[Latency, Latency] | None:
        """What :meth:`latency_pair` would return when it is already timed (same
        architecture, batch, threads and device), else None; never times anything."""
        sig = arch_signature(model)
        key = (("lat", self.latency_batch, self.precision), sig) if sig == self.base_signature else \
            (("latpair", self.latency_batch, self.precision), sig)
        got = self._arch_cache.get(key)
        return (got, got) if sig == self.base_signature and got is not None else got

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, subset: str = "quick", *, latency: bool = True) -> Metrics:
        """All metrics of ``model`` on ``subset`` ("quick" or "full")."""
        x, y = self.evalset.subset(subset)
        base_out = self.base_outputs(subset)
        with peak_memory(x.device) as peak:
            out = self.outputs(model, subset)
        q = quality_sums(out, base_out, y, self.task, self.evalset.num_classes).figures()
        params, nz, sparsity = nonzero_counts(model)
        sig = arch_signature(model)
        example = x[:1]
        macs = self._cached("macs", sig, lambda: count_macs(model, example))
        size = self._cached("size", sig, lambda: state_dict_bytes(model))
        base_lat, lat = self.latency_pair(model, sig) if latency else (None, None)
        extra = {"perplexity": math.exp(min(q["loss"], 700.0))} if self.task == "language-model" else {}
        return Metrics(**q, params=params, nonzero_params=nz,
                       sparsity=sparsity, macs=macs, size_bytes=size, latency=lat, base_latency=base_lat,
                       subset=subset, n=len(x), shapes_changed=sig != self.base_signature, extra=extra,
                       precision=self.precision, peak_mem_bytes=peak["bytes"])


__all__ = ["Metrics", "Evaluator", "QualitySums", "quality_sums"]
