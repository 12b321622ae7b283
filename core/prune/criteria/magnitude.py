"""Criteria computed from the weights alone: magnitude, its variants and controls."""
from __future__ import annotations

import torch

from core.prune.criteria.base import (
    SummedUnits,
    UnitCriterion,
    WeightCriterion,
    input_columns,
    register_criterion,
    unit_rows,
)


@register_criterion
class L1(SummedUnits):
    """Weight magnitude |w| (L1 norm per unit). Han et al., "Learning both Weights and
    Connections for Efficient Neural Networks", NeurIPS 2015; Li et al., "Pruning Filters
    for Efficient ConvNets", ICLR 2017."""

    name = "l1"
    description = "Magnitude |w|; per unit, the L1 norm of its weights."
    scores_are_abs_weight = True  # weight pruning thresholds w itself, never allocating |w|

    def weight_scores(self, name, module, state):
        return module.weight.detach().abs()


@register_criterion
class L2(WeightCriterion, UnitCriterion):
    """Squared magnitude per weight, L2 norm per unit. Han et al. 2015; Li et al. 2017."""

    name = "l2"
    description = "Magnitude w²; per unit, the L2 norm of its weights."

    def weight_scores(self, name, module, state):
        return module.weight.detach().square()

    def unit_scores(self, name, module, state):
        w = module.weight.detach()
        return w.reshape(w.shape[0], -1).norm(p=2, dim=1)


@register_criterion
class Random(WeightCriterion, UnitCriterion):
    """Uniform random scores, seeded: the baseline every pruning study needs
    (Blalock et al., "What is the State of Neural Network Pruning?", MLSys 2020)."""

    name = "random"
    description = "Random scores (seeded): the baseline every study needs."

    def _gen(self, name: str) -> torch.Generator:
        # One generator per layer, derived from the seed and the name: order-independent.
        import zlib

        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))

    def weight_scores(self, name, module, state):
        w = module.weight
        return torch.rand(w.shape, generator=self._gen(name)).to(w.device)

    def unit_scores(self, name, module, state):
        w = module.weight
        return torch.rand(w.shape[0], generator=self._gen(name)).to(w.device)


@register_criterion
class Largest(SummedUnits):
    """Inverted magnitude (-|w|): prunes the largest weights first. An ablation control
    (Blalock et al., "What is the State of Neural Network Pruning?", MLSys 2020; Zhou et
    al., "Deconstructing Lottery Tickets", NeurIPS 2019, use such inverted rankings)."""

    name = "largest"
    description = "Largest first: negated magnitude, prunes the biggest weights (ablation)."

    def weight_scores(self, name, module, state):
        return -module.weight.detach().abs()


@register_criterion
class LAMP(WeightCriterion, UnitCriterion):
    """Layer-adaptive magnitude: w² divided by the sum of w² of all weights of the layer
    that are at least as large. Lee et al., "Layer-adaptive Sparsity for the
    Magnitude-based Pruning", ICLR 2021."""

    name = "lamp"
    description = "LAMP: w² over the sum of w² of the layer's weights at least as large."

    @staticmethod
    def _lamp(s: torch.Tensor) -> torch.Tensor:
        flat = s.flatten()
        srt, order = torch.sort(flat)
        # sum of the scores >= each one (suffix sums of the ascending order)
        suffix = srt.flip(0).cumsum(0).flip(0)
        out = torch.empty_like(flat)
        out[order] = srt / suffix.clamp_min(torch.finfo(srt.dtype).tiny)
        return out.reshape(s.shape)

    def weight_scores(self, name, module, state):
        return self._lamp(module.weight.detach().float().square())

    def unit_scores(self, name, module, state):
        return self._lamp(unit_rows(module.weight.detach().float()).square().sum(1))


@register_criterion
class OutgoingL1(UnitCriterion):
    """L1 sum of a unit's outgoing weights: the columns of the next layer(s) that read
    the unit. Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (kernel sums);
    the original prunescope design."""

    name = "l1_out"
    description = "Outgoing L1: sum of |w| over the next layer's weights that read the unit."
    source = "in"

    def unit_scores(self, name, module, state):
        return input_columns(module).abs().sum(1)


@register_criterion
class Variance(UnitCriterion):
    """Variance of a unit's outgoing weights (the next layer's columns that read it): a
    unit whose consumers all weigh it alike carries little that a bias could not. From
    the original prunescope design."""

    name = "variance"
    description = "Variance of the unit's outgoing weights (next layer's columns)."
    source = "in"

    def unit_scores(self, name, module, state):
        c = input_columns(module).float()
        return c.var(1, unbiased=False) if c.shape[1] > 1 else c.abs().sum(1)
