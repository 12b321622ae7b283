"""Unstructured (weight-level) pruning: thresholds, sparsities and masks.

The base model is never changed: a prune step builds a new model whose prunable
weights are ``weight * mask`` (the original values stay in the base or in the cached
prefix model; "baking in" is simply exporting the built model).

A unit is pruned when its score is strictly below the threshold. Turning a sparsity
into a threshold does not sort all scores: a histogram of the scores (kept in the
apply context's memo of the source model) finds the bin holding the k-th smallest
score, and an exact sort runs only over the scores in that bin.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.ground.layers import PRUNABLE_TYPES, prunable_layers
from core.plan.report import StepReport
from core.prune.clone import clone_with
from core.prune.criteria import get_criterion
from core.prune.thresholds import threshold_above

_SELECT_BINS = 4096


class _Scores:
    """Scores of several layers, read through the few operations threshold selection
    needs. Generic version: the scores are materialised one layer at a time."""

    def __init__(self, scores: Mapping[str, torch.Tensor]):
        self.scores = scores

    def numel(self, n: str) -> int:
        return self.scores[n].numel()

    def minmax(self, n: str) -> tuple[float, float]:
        a, b = torch.aminmax(self.scores[n])
        return float(a), float(b)

    def hist(self, n: str, bins: int, lo: float, hi: float) -> torch.Tensor:
        return torch.histc(self.scores[n].float(), bins=bins, min=lo, max=hi).double().cpu()

    def between(self, n: str, lo: float, hi: float) -> tuple[torch.Tensor, int]:
        """(scores in [lo, hi], count of scores below lo)."""
        s = self.scores[n].flatten()
        return s[(s >= lo) & (s <= hi)].float(), int(torch.count_nonzero(s < lo))

    def pruned_weight(self, n: str, w: torch.Tensor, t: float) -> torch.Tensor:
        """``w`` with the weights whose score is below ``t`` set to zero (a new tensor)."""
        return w * (self.scores[n] >= t).to(w.dtype)


class _AbsScores(_Scores):
    """Scores that are |w|: every operation runs on w itself, never allocating |w|."""

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers = layers

    def _w(self, n):
        return self.layers[n].weight.detach()

    def numel(self, n):
        return self._w(n).numel()

    def minmax(self, n):
        a, b = torch.aminmax(self._w(n))
        m = max(-float(a), float(b))
        return 0.0, m

    def hist(self, n, bins, lo, hi):
        # Histogram of w over [-hi, hi] with 2*bins bins, folded onto |w| over [0, hi].
        assert lo == 0.0
        h = torch.histc(self._w(n).float(), bins=2 * bins, min=-hi, max=hi).double().cpu()
        return h[bins:] + h[:bins].flip(0)

    def between(self, n, lo, hi):
        w = self._w(n).flatten()
        sel = ((w >= lo) & (w <= hi)) | ((w <= -lo) & (w >= -hi))
        below = int(torch.count_nonzero((w > -lo) & (w < lo)))
        return w[sel].abs().float(), below

    def pruned_weight(self, n, w, t):
        if t <= 0:
            return w.clone()
        if math.isinf(t):
            return torch.zeros_like(w)
        # hardshrink keeps |w| > lambda: one fused pass, the same cost as w * mask.
        return F.hardshrink(w, float(np.nextafter(np.float32(t), np.float32(-np.inf))))


def _score_hist(sc: _Scores, names: list[str]) -> tuple[float, float, torch.Tensor]:
    """(lo, hi, counts) of all scores of ``names`` over ``_SELECT_BINS`` equal bins."""
    lo, hi = math.inf, -math.inf
    for n in names:
        a, b = sc.minmax(n)
        lo, hi = min(lo, a), max(hi, b)
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.zeros(_SELECT_BINS, dtype=torch.float64)
    for n in names:
        counts += sc.hist(n, _SELECT_BINS, lo, hi)
    return lo, hi, counts


def select_threshold(scores: Mapping[str, torch.Tensor] | _Scores, names: Iterable[str], sparsity: float,
                     memo: dict | None = None, cache_tag: str = "") -> float:
    """The threshold that prunes ``sparsity`` of all scores of ``names`` together.

    Exactly ``round(sparsity * N)`` scores are strictly below the returned value
    (ties aside). ``memo`` (the apply context's memo of the source model) and
    ``cache_tag`` let repeated calls on the same source model reuse the score histogram.

    Returns:
        ``-inf`` for sparsity 0, ``+inf`` for sparsity 1, else a finite threshold.
    """
    sc = scores if isinstance(scores, _Scores) else _Scores(scores)
    names = list(names)
    if not names:
        return math.inf
    key = ("score_hist", cache_tag, tuple(names))
    entry = memo.get(key) if memo is not None else None
    if entry is None:
        entry = _score_hist(sc, names)
        if memo is not None:
            memo[key] = entry
    lo, hi, counts = entry
    total = int(counts.sum())
    k = int(round(sparsity * total))
    if k <= 0:
        return -math.inf
    if k >= total:
        return math.inf
    cum = torch.cumsum(counts, 0)
    b = min(int(torch.searchsorted(cum, torch.tensor(float(k), dtype=torch.float64))), _SELECT_BINS - 1)
    width = (hi - lo) / _SELECT_BINS
    # Gather the members of bin b exactly (with a small margin for rounding at the
    # edges), count everything below, and rank inside the candidates.
    margin = width * 1e-3
    blo, bhi = lo + b * width - margin, lo + (b + 1) * width + margin
    cands, below = [], 0
    for n in names:
        c, nb = sc.between(n, blo, bhi)
        cands.append(c)
        below += nb
    c = torch.sort(torch.cat(cands)).values
    idx = min(max(k - below, 1), len(c))  # 1-based rank inside the candidates
    return threshold_above(float(c[idx - 1]), float(c[idx]) if idx < len(c) else None)


def layer_thresholds(step, scores: _Scores, layers: dict[str, nn.Module], memo: dict | None = None,
                     cache_tag: str = "") -> tuple[dict[str, float], float | None]:
    """The threshold each layer gets from a prune step (global amount + overrides).

    Returns:
        ``(layer -> threshold, the global threshold or None)``; layers missing from the
        mapping are not pruned.

    Raises:
        ModelError: an override names a layer that is not prunable.
    """
    unknown = [o.layer for o in step.layers if o.layer not in layers]
    if unknown:
        raise ModelError(f"layer override(s) {unknown} are not prunable layers; prunable: "
                         f"{', '.join(list(layers)[:12])}{' ...' if len(layers) > 12 else ''}")
    overridden = {o.layer for o in step.layers}
    globals_ = [n for n in layers if n not in overridden]
    out: dict[str, float] = {}
    if step.threshold is not None:
        t = step.threshold
    elif step.sparsity is not None:
        t = select_threshold(scores, globals_, step.sparsity, memo=memo, cache_tag=cache_tag)
    else:
        t = None
    if t is not None:
        for n in globals_:
            out[n] = t
    for o in step.layers:
        out[o.layer] = (o.threshold if o.threshold is not None else
                        select_threshold(scores, [o.layer], o.sparsity, memo=memo, cache_tag=cache_tag))
    return out, (t if globals_ else None)


def masked_copy(model: nn.Module, new_weights: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` sharing no tensor with it, where ``new_weights[layer]`` replaces
    that layer's weight.

    The replaced weights are never copied from the source (handed to the copy as they
    are), so building costs one pass over the pruned weights; the rest of the tree is
    copied by :func:`~core.prune.clone.clone_with` (equal to ``deepcopy``, without its
    per-attribute host work).
    """
    layers = dict(model.named_modules())
    memo = {}
    for name, w in new_weights.items():
        old = layers[name].weight
        memo[id(old)] = nn.Parameter(w, requires_grad=old.requires_grad)
    return clone_with(model, memo)


def _per_device(counts: list[torch.Tensor]) -> list[list[int]]:
    """``counts`` (0-d tensors, in order) read with one transfer per run of tensors on one
    device: on a GPU one synchronisation instead of one per tensor."""
    out, run = [], []
    for c in counts:
        if run and c.device != run[0].device:
            out.append(torch.stack(run).tolist())
            run = []
        run.append(c)
    if run:
        out.append(torch.stack(run).tolist())
    return out


def _zeros(memo: dict, name: str, w: torch.Tensor) -> int:
    """Zero weights of one source layer (memoised per source model)."""
    key = ("zeros", name)
    if key not in memo:
        memo[key] = w.numel() - int(torch.count_nonzero(w))
    return memo[key]


class WeightScores:
    """One criterion's weight scores of a source model, ready for threshold selection:
    what a weight-level ``Prune`` step computes first. Threshold histograms are kept in
    the context's memo of the model, so a sensitivity sweep and the step share them."""

    def __init__(self, model: nn.Module, criterion: str, seed: int = 0, ctx=None):
        crit = get_criterion(criterion, seed=seed)
        self.layers = prunable_layers(model)
        if not self.layers:
            raise ModelError("the model has no Linear or Conv layer with weights to prune")
        calib = ctx.calibration(seed) if (crit.needs_data and ctx is not None) else None
        scores = crit(model, self.layers, "weight", calib)  # checks the criterion; scores computed lazily
        # a WeightCriterion declares whether its scores are |w| (then no |w| is ever allocated)
        self.scores = _AbsScores(self.layers) if crit.scores_are_abs_weight else _Scores(scores)
        self.memo = ctx.memo(model) if ctx is not None else {}
        self.tag = f"{criterion}:{seed}"

    @torch.no_grad()
    def pruned(self, layer: str, sparsity: float) -> torch.Tensor:
        """``layer``'s weight with ``sparsity`` of its own weights pruned (what an
        override ``{layer: sparsity}`` gives it), a new tensor."""
        t = select_threshold(self.scores, [layer], sparsity, memo=self.memo, cache_tag=self.tag)
        return self.scores.pruned_weight(layer, self.layers[layer].weight.detach(), t)


def weight_prune(step, model: nn.Module, ctx=None) -> tuple[nn.Module, StepReport]:
    """Build the masked model of a ``Prune(granularity="weight")`` step.

    Args:
        step: the prune step.
        model: the source model (not changed).
        ctx: the apply context (calibration batch for data-driven criteria, memo).

    Returns:
        ``(new model with pruned weights set to zero, report)``; the report holds each
        layer's threshold in ``step.unit``, its zero weights after the step and the
        weights the step newly set to zero.
    """
    ws = WeightScores(model, step.criterion, step.seed, ctx)
    layers, scores, memo = ws.layers, ws.scores, ws.memo
    thresholds, t_global = layer_thresholds(step, scores, layers, memo, cache_tag=ws.tag)
    new, nonzero, before = {}, {}, 0
    with torch.no_grad():
        for name, t in thresholds.items():
            w = layers[name].weight.detach()
            new[name] = nw = scores.pruned_weight(name, w, t)
            nonzero[name] = torch.count_nonzero(nw)
            before += _zeros(memo, name, w)
        # one read of every count (on a GPU: one synchronisation, not one per layer)
        counts = [int(c) for dev_counts in _per_device(list(nonzero.values())) for c in dev_counts]
    units = {name: (new[name].numel() - c, new[name].numel()) for name, c in zip(nonzero, counts)}
    report = StepReport("prune", thresholds=thresholds, threshold_unit=step.unit, global_threshold=t_global,
                        units=units, unit_name="weight", newly_zeroed=sum(p for p, _ in units.values()) - before)
    report.summary = (f"{report.pruned:,} of {report.total:,} weights are zero in the pruned layers; "
                      f"{report.newly_zeroed:,} were set to zero by this step")
    return masked_copy(model, new), report


__all__ = ["PRUNABLE_TYPES", "prunable_layers", "select_threshold", "layer_thresholds", "masked_copy",
           "weight_prune", "WeightScores"]
