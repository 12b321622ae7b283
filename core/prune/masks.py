"""Unstructured (weight-level) pruning: thresholds, sparsities and masks.

The base model is never changed: a prune step builds a new model whose prunable
weights are ``weight * mask`` (the original values stay in the base or in the cached
prefix model; "baking in" is simply exporting the built model).

A unit is pruned when its score is strictly below the threshold. Turning a sparsity
into a threshold does not sort all scores: a sorted strided sample of the scores (kept
in the apply context's memo of the source model) brackets the k-th smallest score, one
pass over the scores counts those below the bracket and gathers those inside it, and
``kthvalue`` ranks the few gathered ones. For |w| scores that pass writes |w| into the
buffer that then receives the pruned weight, so a global threshold costs one pass over
the weights to select and one to mask, and allocates nothing beyond the new weights.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.ground.layers import PRUNABLE_TYPES, prunable_layers
from core.metrics.cost import nonzero_count, note_nonzero
from core.plan.report import StepReport
from core.prune.clone import clone_with
from core.prune.criteria import get_criterion
from core.prune.thresholds import threshold_above

_SAMPLE = 1 << 16  # scores in the strided sample that brackets the k-th score
_MARGIN_SIGMAS = 6.0  # bracket half-width, in standard deviations of the sampled rank


class _Scores:
    """Scores of several layers, read through the few operations threshold selection
    needs. Generic version: the scores are materialised one layer at a time."""

    def __init__(self, scores: Mapping[str, torch.Tensor]):
        self.scores = scores
        self.zeros_at: dict[str, tuple[float, int]] = {}  # layer -> (t, zero weights after pruning at t)

    def sample(self, n: str, stride: int) -> tuple[np.ndarray, int]:
        """(every ``stride``-th score of layer ``n`` as a float32 array, the layer's score count)."""
        s = self.scores[n].reshape(-1)
        return s[stride // 2::stride].float().cpu().numpy(), s.numel()

    def band(self, n: str, lo: float, hi: float) -> tuple[int, np.ndarray]:
        """(count of scores below ``lo``, the scores in ``[lo, hi]`` as a float32 array)."""
        return _band(self.scores[n], lo, hi)

    def pruned_weight(self, n: str, w: torch.Tensor, t: float) -> torch.Tensor:
        """``w`` with the weights whose score is below ``t`` set to zero (a new tensor)."""
        return torch.mul(w, self.scores[n] >= t)

    def noted_zeros(self, n: str, t: float) -> int | None:
        """Zero weights of layer ``n`` once pruned at ``t`` when the selection counted them
        (None here: a weight may be zero with a score above ``t``)."""
        return None


class _AbsScores(_Scores):
    """Scores that are |w|: the selection pass writes |w| into a buffer that the masking
    pass then overwrites with the pruned weight, so no extra weight-sized tensor is made."""

    def __init__(self, layers: dict[str, nn.Module]):
        super().__init__({})
        self.layers = layers
        self._scratch: dict[str, torch.Tensor] = {}  # layer -> |w|, handed once to pruned_weight

    def _w(self, n):
        return self.layers[n].weight.detach()

    def sample(self, n, stride):
        w = self._w(n).reshape(-1)
        return w[stride // 2::stride].abs().float().cpu().numpy(), w.numel()

    def band(self, n, lo, hi):
        a = self._scratch.get(n)
        if a is None:
            a = self._scratch[n] = _abs(self._w(n))
        return _band(a, lo, hi)

    def pruned_weight(self, n, w, t):
        buf = self._scratch.pop(n, None)
        if t <= 0:
            return w.clone()
        if math.isinf(t):
            return torch.zeros_like(w)
        # hardshrink keeps |w| > lambda, i.e. |w| >= t: one fused pass, the same cost as w * mask
        lam = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            return torch.hardshrink(w, lam)
        return torch.hardshrink(w, lam, out=buf)

    def noted_zeros(self, n, t):
        # every zero weight has |w| < t when t > 0: the scores counted below t are the zeros after
        got = self.zeros_at.get(n)
        return got[1] if got is not None and got[0] == t and 0 < t < math.inf else None


def _numpy(s: torch.Tensor) -> np.ndarray | None:
    """``s`` as a flat numpy view when it is a contiguous float CPU tensor, else None."""
    if s.device.type == "cpu" and s.dtype in (torch.float32, torch.float64) and s.is_contiguous():
        return s.detach().numpy().reshape(-1)
    return None


def _band(s: torch.Tensor, lo: float, hi: float) -> tuple[int, np.ndarray]:
    """(count of ``s < lo``, the values of ``s`` in ``[lo, hi]`` as a float32 array).

    On the CPU the passes run in numpy, one thread each: on a shared, busy host each of
    torch's two-thread operations waited on the other thread (measured 3x slower on
    16.8 M scores with the host's load at 8 on 2 cores)."""
    x = _numpy(s)
    if x is None:
        below = s < lo
        inside = s <= hi
        inside.logical_xor_(below)
        return int(torch.count_nonzero(below)), s[inside].float().cpu().numpy()
    below = np.less(x, lo)
    inside = np.less_equal(x, hi)
    np.logical_xor(inside, below, out=inside)  # lo <= s <= hi (s < lo implies s <= hi)
    return int(np.count_nonzero(below)), x[inside].astype(np.float32, copy=False)


def _abs(w: torch.Tensor) -> torch.Tensor:
    """|w| as a new tensor (on the CPU written by numpy: see :func:`_band`)."""
    x = _numpy(w)
    if x is None:
        return torch.abs(w)
    out = torch.empty_like(w, memory_format=torch.contiguous_format)
    np.abs(x, out=out.numpy().reshape(-1))
    return out


def _score_sample(sc: _Scores, names: list[str]) -> tuple[np.ndarray, int]:
    """(sorted strided sample of all scores of ``names`` as float32, their total count)."""
    total = sum(_numel(sc, n) for n in names)
    stride = max(1, total // _SAMPLE)
    parts, total = zip(*(sc.sample(n, stride) for n in names))
    return np.sort(np.concatenate(parts)), sum(total)


def _numel(sc: _Scores, n: str) -> int:
    """Score count of layer ``n`` (read from the weight when the scores are |w|)."""
    return sc.layers[n].weight.numel() if isinstance(sc, _AbsScores) else sc.scores[n].numel()


def _bracket(sample: np.ndarray, q: float, widen: float) -> tuple[float, float]:
    """``[lo, hi]`` around quantile ``q`` of the scores, ``widen`` times the usual margin."""
    m = len(sample)
    r = q * m
    d = widen * (_MARGIN_SIGMAS * math.sqrt(m * q * (1 - q)) + 8)
    i, j = math.floor(r - d), math.ceil(r + d)
    return (float(sample[i]) if i >= 0 else -math.inf), (float(sample[j]) if j < m else math.inf)


def select_threshold(scores: Mapping[str, torch.Tensor] | _Scores, names: Iterable[str], sparsity: float,
                     memo: dict | None = None, cache_tag: str = "") -> float:
    """The threshold that prunes ``sparsity`` of all scores of ``names`` together.

    Exactly ``round(sparsity * N)`` scores are strictly below the returned value
    (ties aside): the threshold lies above the k-th smallest score and at most at the
    (k+1)-th (:func:`~core.prune.thresholds.threshold_above`), as a full sort would give.
    ``memo`` (the apply context's memo of the source model) and ``cache_tag`` let repeated
    calls on the same source model reuse the score sample. Side effect: ``scores`` (a
    ``_Scores``) notes each layer's count of scores below the threshold.

    Returns:
        ``-inf`` for sparsity 0, ``+inf`` for sparsity 1, else a finite threshold.
    """
    sc = scores if isinstance(scores, _Scores) else _Scores(scores)
    names = list(names)
    if not names:
        return math.inf
    key = ("score_sample", cache_tag, tuple(names))
    entry = memo.get(key) if memo is not None else None
    if entry is None:
        entry = _score_sample(sc, names)
        if memo is not None:
            memo[key] = entry
    sample, total = entry
    k = int(round(sparsity * total))
    if k <= 0:
        return -math.inf
    if k >= total:
        return math.inf
    for widen in (1.0, 16.0, math.inf):  # a bracket that misses the k-th score is widened (rare)
        lo, hi = _bracket(sample, k / total, widen) if widen < math.inf else (-math.inf, math.inf)
        counted = [sc.band(n, lo, hi) for n in names]
        below = sum(b for b, _ in counted)
        cands = np.concatenate([c for _, c in counted])
        if below < k < below + len(cands):  # the k-th and (k+1)-th smallest are both gathered
            break
    j = min(max(k - below, 1), len(cands))  # 1-based rank of the k-th smallest among the gathered (NaN aside)
    c = np.partition(cands, (j - 1, j) if j < len(cands) else j - 1)
    t = threshold_above(float(c[j - 1]), float(c[j]) if j < len(cands) else None)
    tf = np.float32(t)
    sc.zeros_at.update((n, (t, b + int(np.count_nonzero(c < tf)))) for n, (b, c) in zip(names, counted))
    return t


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
        x = _numpy(w)
        memo[key] = w.numel() - int(torch.count_nonzero(w) if x is None else np.count_nonzero(x))
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
            zeros = scores.noted_zeros(name, t)  # counted by the selection pass, else counted here
            nonzero[name] = nonzero_count(nw) if zeros is None else nw.numel() - zeros
            before += _zeros(memo, name, w)
        # one read of every counted tensor (on a GPU: one synchronisation, not one per layer)
        pending = [n for n, c in nonzero.items() if isinstance(c, torch.Tensor)]
        nonzero.update(zip(pending, (c for r in _per_device([nonzero[n] for n in pending]) for c in r)))
    units = {name: (new[name].numel() - c, new[name].numel()) for name, c in nonzero.items()}
    report = StepReport("prune", thresholds=thresholds, threshold_unit=step.unit, global_threshold=t_global,
                        units=units, unit_name="weight", newly_zeroed=sum(p for p, _ in units.values()) - before)
    report.summary = (f"{report.pruned:,} of {report.total:,} weights are zero in the pruned layers; "
                      f"{report.newly_zeroed:,} were set to zero by this step")
    out = masked_copy(model, new)
    modules = dict(out.named_modules())
    for name, c in nonzero.items():  # the readout after this step reads these counts, not the weights again
        note_nonzero(modules[name].weight, c)
    return out, report


__all__ = ["PRUNABLE_TYPES", "prunable_layers", "select_threshold", "layer_thresholds", "masked_copy",
           "weight_prune", "WeightScores"]
