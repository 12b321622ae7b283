"""Confidence intervals of a provisional readout: figures of a small slice of the quick subset
(``EvalSet.glimpse``) shown first, while the quick figures are computed.

The headline is a share of examples (accuracy, agreement with the base): its 95% interval is
the Wilson score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``). The
mean loss gets a normal interval from the per-example losses (mean +- z * sd / sqrt(n)), and a
language model's perplexity the exponential of that. An embedding's neighbour recall is not a
share of independent examples (an example's neighbours are among the slice): it gets none;
neither does a segmenter's mean IoU against label masks (a figure of all the pixels together).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.ground.outputs import NEST_KINDS, batch_size
from core.metrics.nest import error_each, headline_each
from core.sources.models import LABELLED_TASKS

CONFIDENCE = 0.95


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of the share ``k / n`` (scipy's implementation)."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def normal_interval(values: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """mean +- z * sd / sqrt(n) of ``values`` (one per example); a single value: (it, it)."""
    from scipy.stats import norm

    v = values.double().flatten()
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean
    half = float(norm.ppf(0.5 + confidence / 2)) * float(v.std()) / math.sqrt(len(v))
    return mean - half, mean + half


def provisional_fields(q: dict, out: torch.Tensor, base_out: torch.Tensor, y: torch.Tensor, task: str) -> dict:
    """The fields a provisional :class:`Metrics` adds to the figures ``q`` of outputs ``out``:
    ``provisional``, ``interval`` (of the headline, None for an embedding) and, in ``extra``,
    ``loss_interval`` (and ``perplexity_interval`` for a language model), all at 95%."""
    n = batch_size(out)
    fields = {"provisional": True, "interval": None, "extra": {"confidence": CONFIDENCE}}
    if q["output"] == "embedding":
        return fields
    if q.get("class_iou") is not None or q.get("map50") is not None:  # a mean IoU (of all the slice's pixels
        # together) or a mAP (of all its boxes) is not a mean of examples: no per-example interval; the output
        # error's is still one
        fields["extra"]["loss_interval"] = normal_interval(error_each(out, base_out, q["output"]))
        return fields
    if q["output"] in NEST_KINDS:  # a mean of per-example shares (pixels) or cosines: a normal interval
        fields["interval"] = normal_interval(headline_each(out, base_out, q["output"]))
        fields["extra"]["loss_interval"] = normal_interval(error_each(out, base_out, q["output"]))
        return fields
    fields["interval"] = wilson(round(q["accuracy"] * n), n)
    target = y if task in LABELLED_TASKS else base_out.argmax(1)
    lo, hi = normal_interval(F.cross_entropy(out.float(), target, reduction="none"))
    fields["extra"]["loss_interval"] = (lo, hi)
    if task == "language-model":
        fields["extra"]["perplexity_interval"] = (math.exp(min(lo, 700.0)), math.exp(min(hi, 700.0)))
    return fields


__all__ = ["CONFIDENCE", "wilson", "normal_interval", "provisional_fields"]
