"""Data-driven criteria: scores from the calibration batch (activations, gradients).

Activation criteria share :class:`ActivationCriterion` (a unit criterion read where the
unit enters the next layer), whose ``prepare`` collects per-input-channel statistics of
what enters each layer, on a private copy of the model; Wanda reads the same statistics
for its weight scores.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import PrunescopeError
from core.ground.outputs import is_nest, judgeable, leaves
from core.prune.criteria.base import (
    SummedUnits,
    UnitCriterion,
    _channel_dim,
    _input_norms_for_weight,
    register_criterion,
)
from core.sources.bases import clone_model


def _per_example_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, C): each example's mean over everything but batch and channel."""
    x = x.detach().float()
    if dim != 1:
        x = x.movedim(dim, 1)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(2) if x.dim() > 2 else x


class _InputStats:
    """Per input channel statistics of one layer's input over the calibration batch."""

    def __init__(self):
        self.abs_sum = self.sq_sum = self.nonpos = None
        self.count = 0
        self.per_example: list[torch.Tensor] = []

    def add(self, x: torch.Tensor, dim: int) -> None:
        x = x.detach().float()
        if dim != 1:
            x = x.movedim(dim, 1)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, rows)
        a, s, z = flat.abs().sum(1), flat.square().sum(1), (flat <= 0).sum(1).float()
        if self.abs_sum is None:
            self.abs_sum, self.sq_sum, self.nonpos = a, s, z
        else:
            self.abs_sum, self.sq_sum, self.nonpos = self.abs_sum + a, self.sq_sum + s, self.nonpos + z
        self.count += flat.shape[1]
        self.per_example.append(_per_example_channels(x, 1))


def collect_input_stats(model: nn.Module, layers: dict[str, nn.Module],
                        calib: tuple[torch.Tensor, torch.Tensor]) -> dict[str, _InputStats]:
    """Statistics of what enters each layer on the calibration batch.

    The forward pass runs on a private copy of ``model`` (hooks are never added to the
    given model, which may be shared), in inference mode.
    """
    names = set(layers)
    copy_ = clone_model(model)
    stats = {n: _InputStats() for n in names}
    handles = []
    for n, m in copy_.named_modules():
        if n in names:
            dim = _channel_dim(m)
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, n=n, dim=dim: stats[n].add(inp[0], dim)))
    try:
        with torch.inference_mode():
            copy_(calib[0])
    finally:
        for h in handles:
            h.remove()
    return stats


def weight_gradients(model: nn.Module, layers: dict[str, nn.Module],
                     calib: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d(cross-entropy)/d(weight) of each layer on the calibration batch (an output of several
    leaves: the sum of each leaf's cross-entropy against its own argmax, flattened per example).

    Computed on a private copy (no ``.grad``, hooks or ``requires_grad`` change is left on
    ``model``); the copy keeps ``model``'s train/eval mode.
    """
    copy_ = clone_model(model)
    mods = dict(copy_.named_modules())
    params = []
    for p in copy_.parameters():
        p.requires_grad_(False)
    for n in layers:
        w = mods[n].weight
        w.requires_grad_(True)
        params.append(w)
    x, y = calib
    with torch.enable_grad():
        out = copy_(x)
        if is_nest(out):  # several leaves: each one's cross-entropy against its own argmax (no labels fit them all)
            named = leaves(out)
            flat = [named[k].reshape(len(named[k]), -1).float() for k in judgeable(named)]
            loss = sum(torch.nn.functional.cross_entropy(f, f.argmax(1).detach()) for f in flat)
        else:
            if out.dim() > 2:
                out = out.reshape(out.shape[0], -1)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)).detach()
            for n, p, g in zip(layers, params, grads)}


def _require_stats(state, name: str, crit: str):
    if state is None or name not in state:
        raise PrunescopeError(f"criterion {crit!r} has no calibration statistics for layer {name!r}")
    return state[name]


class ActivationCriterion(UnitCriterion):
    """Base of the unit criteria that read what enters a layer on the calibration batch.

    ``prepare`` collects per-input-channel statistics (:class:`_InputStats`) of every
    scored layer on a private copy; subclasses read them with :meth:`stats`.
    """

    needs_data = True
    source = "in"

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def stats(self, state, name: str) -> _InputStats:
        return _require_stats(state, name, self.name)


@register_criterion
class Taylor(SummedUnits):
    """First-order Taylor: |w · dL/dw| with L the cross-entropy on the calibration batch,
    summed per unit. Molchanov et al., "Pruning Convolutional Neural Networks for Resource
    Efficient Inference", ICLR 2017; "Importance Estimation for Neural Network Pruning",
    CVPR 2019."""

    name = "taylor"
    description = "First-order Taylor |w × gradient| of the loss on the calibration batch."
    needs_data = True

    def prepare(self, model, layers, calib):
        return weight_gradients(model, layers, calib)

    def weight_scores(self, name, module, state):
        g = _require_stats(state, name, self.name)
        return (module.weight.detach() * g).abs()


@register_criterion
class Wanda(SummedUnits):
    """|W| times the L2 norm of the weight's input feature over the calibration batch.
    Sun et al., "A Simple and Effective Pruning Approach for Large Language Models",
    ICLR 2024. For convs the norm is taken over all positions of the input channel."""

    name = "wanda"
    description = "Wanda: |w| × L2 norm of its input activation over the calibration batch."
    needs_data = True  # a unit's score is the sum over its own row of weights (source "out")

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def weight_scores(self, name, module, state):
        st = _require_stats(state, name, self.name)
        norms = st.sq_sum.sqrt().to(module.weight.device)
        return module.weight.detach().abs() * _input_norms_for_weight(module, norms)


@register_criterion
class MeanActivation(ActivationCriterion):
    """Mean absolute activation of the unit over the calibration batch, measured where it
    enters the next layer (after BatchNorm and the nonlinearity). Molchanov et al.,
    ICLR 2017 (the "mean activation" baseline); Polyak & Wolf, IEEE Access 2015."""

    name = "mean_activation"
    description = "Mean |activation| of the unit over the calibration batch."

    def unit_scores(self, name, module, state):
        st = self.stats(state, name)
        return st.abs_sum / max(st.count, 1)


@register_criterion
class APoZ(ActivationCriterion):
    """1 − APoZ, the Average Percentage of Zeros of the unit's activation (values ≤ 0,
    i.e. zero after a ReLU) where it enters the next layer. Hu et al., "Network Trimming:
    A Data-Driven Neuron Pruning Approach", 2016."""

    name = "apoz"
    description = "1 − fraction of zero (≤ 0) activations: mostly-silent units go first."

    def unit_scores(self, name, module, state):
        st = self.stats(state, name)
        return 1.0 - st.nonpos / max(st.count, 1)


@register_criterion
class Entropy(ActivationCriterion):
    """Entropy (bits) of the unit's activation distribution over the calibration batch:
    each example's mean activation, binned into ``bins`` equal bins over the unit's
    range. Luo & Wu, "An Entropy-based Pruning Method for CNN Compression", 2017."""

    name = "entropy"
    description = "Entropy of the unit's activation over the calibration set (low = little information)."

    def __init__(self, seed: int = 0, bins: int = 16):
        super().__init__(seed)
        self.bins = bins

    def unit_scores(self, name, module, state):
        st = self.stats(state, name)
        a = torch.cat(st.per_example, 0)  # (B, C)
        lo, hi = a.min(0).values, a.max(0).values
        span = (hi - lo).clamp_min(1e-12)
        idx = ((a - lo) / span * self.bins).long().clamp_(0, self.bins - 1)  # (B, C)
        counts = torch.zeros(self.bins, a.shape[1], device=a.device)
        counts.scatter_add_(0, idx, torch.ones_like(a))
        p = counts / a.shape[0]
        ent = -(p * torch.log2(p.clamp_min(1e-12))).sum(0)
        return torch.where(hi - lo > 0, ent, torch.zeros_like(ent))


__all__ = ["ActivationCriterion", "Taylor", "Wanda", "MeanActivation", "APoZ", "Entropy",
           "collect_input_stats", "weight_gradients"]
