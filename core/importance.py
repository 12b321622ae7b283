"""Importance criteria: one score per prunable unit.

A criterion is a small class registered in :data:`CRITERIA`. ``__init__`` only stores
hyperparameters; ``__call__(model, layers, granularity, calib)`` returns a mapping
from layer name to scores, computed lazily per layer so a global pass over a large
model never holds every score tensor at once.

* granularity ``"weight"``: a tensor shaped like the layer's weight.
* granularity ``"neuron"`` / ``"channel"`` / ``"head"``: a 1-D tensor, one score per
  output unit (dim 0 of the weight) — see ``core.structured`` for heads.

Higher score = more important; units with the lowest scores are pruned first.

Where a unit's score comes from (``Criterion.source``):

* ``"out"``: the layer that produces the unit (its row of weights: ``unit_scores``).
* ``"in"``: the layers that read it (their input channel: ``input_scores``): outgoing
  weights, or the activation as it enters the next layer (after BatchNorm and the
  nonlinearity). Such criteria score units only inside a dependency group, which
  ``core.structured`` builds; that module also turns per-layer scores into one score
  per coupled group (residual adds, concatenations) and per attention head.

Data-driven criteria (``needs_data``) compute what they need in ``prepare`` on a
private copy of the model, so no hook, ``.grad`` or ``requires_grad`` change is left
on the model they score.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from .registry import Registry

CRITERIA: Registry[type["Criterion"]] = Registry("criterion")


def register_criterion(cls: type["Criterion"]) -> type["Criterion"]:
    """Class decorator: add a criterion to the registry under ``cls.name``."""
    CRITERIA.register(cls.name, cls)
    return cls


def list_criteria() -> list[str]:
    return CRITERIA.names()


def get_criterion(name: str | "Criterion", **kwargs) -> "Criterion":
    """An instance of the named criterion (an instance is passed through).

    Raises:
        UnknownNameError: unknown name; the message lists the valid criteria.
    """
    if isinstance(name, Criterion):
        return name
    return CRITERIA.get(name)(**kwargs)


class LazyScores(Mapping):
    """Layer name -> scores, computed when asked for and not kept."""

    def __init__(self, layers: dict[str, nn.Module], fn: Callable[[str, nn.Module], torch.Tensor]):
        self._layers = layers
        self._fn = fn

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._fn(name, self._layers[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)


class Criterion:
    """Base class. Subclasses set the class attributes and override the scorers."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line shown in the app
    granularities: ClassVar[tuple[str, ...]] = ("weight", "neuron", "channel", "head")
    needs_data: ClassVar[bool] = False  # True: uses the calibration batch
    source: ClassVar[str] = "out"  # "out": scored by the producing layer; "in": by the layers reading it

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, model: nn.Module, layers: dict[str, nn.Module], granularity: str = "weight",
                 calib: tuple[torch.Tensor, torch.Tensor] | None = None) -> Mapping[str, torch.Tensor]:
        """Scores for ``layers`` of ``model`` (lazy mapping name -> tensor).

        Raises:
            ValueError: the criterion does not support ``granularity``, or needs
                calibration data and got none.
        """
        if granularity not in self.granularities:
            raise ValueError(f"criterion {self.name!r} supports granularities {self.granularities}, "
                             f"not {granularity!r}")
        if self.needs_data and calib is None:
            raise ValueError(f"criterion {self.name!r} needs a calibration batch")
        state = self.prepare(model, layers, calib)
        if granularity == "weight":
            return LazyScores(layers, lambda n, m: self.weight_scores(n, m, state))
        return LazyScores(layers, lambda n, m: self.unit_scores(n, m, state))

    def prepare(self, model: nn.Module, layers: dict[str, nn.Module], calib) -> Any:
        """Collect what the scorers need (activations, gradients); default: nothing."""
        return None

    def weight_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per weight, shaped like ``module.weight``."""
        raise ValueError(f"criterion {self.name!r} has no weight-level scores")

    def unit_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per output unit; default: sum of the weight scores over the unit."""
        if self.source == "in":
            raise ValueError(f"criterion {self.name!r} scores a unit by the layers that read it; "
                             "use core.structured.unit_scores(model, layer, ...) for per-unit scores")
        s = self.weight_scores(name, module, state)
        return s.reshape(s.shape[0], -1).sum(1)

    def input_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per input channel of ``module`` (criteria with ``source = "in"``)."""
        raise ValueError(f"criterion {self.name!r} has no input-channel scores")


@register_criterion
class L1(Criterion):
    """Weight magnitude |w| (L1 norm per unit). Han et al., "Learning both Weights and
    Connections for Efficient Neural Networks", NeurIPS 2015; Li et al., "Pruning Filters
    for Efficient ConvNets", ICLR 2017."""

    name = "l1"
    description = "Magnitude |w|; per unit, the L1 norm of its weights."
    scores_are_abs_weight = True  # lets core.masks threshold w directly, never allocating |w|

    def weight_scores(self, name, module, state):
        return module.weight.detach().abs()


@register_criterion
class L2(Criterion):
    """Squared magnitude per weight, L2 norm per unit. Han et al. 2015; Li et al. 2017."""

    name = "l2"
    description = "Magnitude w²; per unit, the L2 norm of its weights."

    def weight_scores(self, name, module, state):
        return module.weight.detach().square()

    def unit_scores(self, name, module, state):
        w = module.weight.detach()
        return w.reshape(w.shape[0], -1).norm(p=2, dim=1)


@register_criterion
class Random(Criterion):
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


# --------------------------------------------------------------------------------------
# Helpers shared by the criteria below
# --------------------------------------------------------------------------------------

def _rows(t: torch.Tensor) -> torch.Tensor:
    """(units, rest): one row per output unit (dim 0)."""
    return t.reshape(t.shape[0], -1)


def _cols(module: nn.Module) -> torch.Tensor:
    """(in_channels, rest): one row per input channel of a Linear or Conv.

    For a grouped conv the weight holds ``in/groups`` columns per group; every input
    channel gets the columns of its own group's filters.
    """
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        return w.t()
    groups = getattr(module, "groups", 1)
    if groups == 1:
        return w.transpose(0, 1).reshape(w.shape[1], -1)
    out, cin_g = w.shape[0], w.shape[1]
    # (groups, out/groups, in/groups, k...) -> (groups, in/groups, out/groups * k...)
    wg = w.reshape(groups, out // groups, cin_g, -1).transpose(1, 2)
    return wg.reshape(groups * cin_g, -1)


def _channel_dim(module: nn.Module) -> int:
    """Channel dimension of the module's input: 1 for convs, last for Linear."""
    return -1 if isinstance(module, nn.Linear) else 1


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
    from .models import clone_model

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
    """d(cross-entropy)/d(weight) of each layer on the calibration batch.

    Computed on a private copy (no ``.grad``, hooks or ``requires_grad`` change is left on
    ``model``); the copy keeps ``model``'s train/eval mode.
    """
    from .models import clone_model

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
        if out.dim() > 2:
            out = out.reshape(out.shape[0], -1)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)).detach()
            for n, p, g in zip(layers, params, grads)}


def _input_norms_for_weight(module: nn.Module, norms: torch.Tensor) -> torch.Tensor:
    """Input-channel norms broadcast to the weight's shape (grouped convs handled)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return norms.reshape(1, -1).expand_as(w)
    groups = getattr(module, "groups", 1)
    out, cin_g = w.shape[0], w.shape[1]
    # input channel of weight[o, j] is (o // (out/groups)) * cin_g + j
    g_of_o = torch.arange(out, device=norms.device) // (out // groups)
    idx = g_of_o[:, None] * cin_g + torch.arange(cin_g, device=norms.device)[None, :]  # (out, cin_g)
    n = norms[idx]
    return n.reshape(out, cin_g, *([1] * (w.dim() - 2))).expand_as(w)


def _require_stats(state, name: str, crit: str):
    if state is None or name not in state:
        raise ValueError(f"criterion {crit!r} has no calibration statistics for layer {name!r}")
    return state[name]


# --------------------------------------------------------------------------------------
# Magnitude variants and controls
# --------------------------------------------------------------------------------------

@register_criterion
class Largest(Criterion):
    """Inverted magnitude (-|w|): prunes the largest weights first. An ablation control
    (Blalock et al., "What is the State of Neural Network Pruning?", MLSys 2020; Zhou et
    al., "Deconstructing Lottery Tickets", NeurIPS 2019, use such inverted rankings)."""

    name = "largest"
    description = "Largest first: negated magnitude, prunes the biggest weights (ablation)."

    def weight_scores(self, name, module, state):
        return -module.weight.detach().abs()


@register_criterion
class LAMP(Criterion):
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
        return self._lamp(_rows(module.weight.detach().float()).square().sum(1))


@register_criterion
class OutgoingL1(Criterion):
    """L1 sum of a unit's outgoing weights: the columns of the next layer(s) that read
    the unit. Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (kernel sums);
    the original prunescope design."""

    name = "l1_out"
    description = "Outgoing L1: sum of |w| over the next layer's weights that read the unit."
    granularities = ("neuron", "channel", "head")
    source = "in"

    def input_scores(self, name, module, state):
        return _cols(module).abs().sum(1)


@register_criterion
class Variance(Criterion):
    """Variance of a unit's outgoing weights (the next layer's columns that read it): a
    unit whose consumers all weigh it alike carries little that a bias could not. From
    the original prunescope design."""

    name = "variance"
    description = "Variance of the unit's outgoing weights (next layer's columns)."
    granularities = ("neuron", "channel", "head")
    source = "in"

    def input_scores(self, name, module, state):
        c = _cols(module).float()
        return c.var(1, unbiased=False) if c.shape[1] > 1 else c.abs().sum(1)


# --------------------------------------------------------------------------------------
# Data-driven criteria (calibration batch)
# --------------------------------------------------------------------------------------

@register_criterion
class Taylor(Criterion):
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
class Wanda(Criterion):
    """|W| times the L2 norm of the weight's input feature over the calibration batch.
    Sun et al., "A Simple and Effective Pruning Approach for Large Language Models",
    ICLR 2024. For convs the norm is taken over all positions of the input channel."""

    name = "wanda"
    description = "Wanda: |w| × L2 norm of its input activation over the calibration batch."
    needs_data = True

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def weight_scores(self, name, module, state):
        st = _require_stats(state, name, self.name)
        norms = st.sq_sum.sqrt().to(module.weight.device)
        return module.weight.detach().abs() * _input_norms_for_weight(module, norms)


@register_criterion
class MeanActivation(Criterion):
    """Mean absolute activation of the unit over the calibration batch, measured where it
    enters the next layer (after BatchNorm and the nonlinearity). Molchanov et al.,
    ICLR 2017 (the "mean activation" baseline); Polyak & Wolf, IEEE Access 2015."""

    name = "mean_activation"
    description = "Mean |activation| of the unit over the calibration batch."
    granularities = ("neuron", "channel", "head")
    needs_data = True
    source = "in"

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def input_scores(self, name, module, state):
        st = _require_stats(state, name, self.name)
        return st.abs_sum / max(st.count, 1)


@register_criterion
class APoZ(Criterion):
    """1 − APoZ, the Average Percentage of Zeros of the unit's activation (values ≤ 0,
    i.e. zero after a ReLU) where it enters the next layer. Hu et al., "Network Trimming:
    A Data-Driven Neuron Pruning Approach", 2016."""

    name = "apoz"
    description = "1 − fraction of zero (≤ 0) activations: mostly-silent units go first."
    granularities = ("neuron", "channel", "head")
    needs_data = True
    source = "in"

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def input_scores(self, name, module, state):
        st = _require_stats(state, name, self.name)
        return 1.0 - st.nonpos / max(st.count, 1)


@register_criterion
class Entropy(Criterion):
    """Entropy (bits) of the unit's activation distribution over the calibration batch:
    each example's mean activation, binned into ``bins`` equal bins over the unit's
    range. Luo & Wu, "An Entropy-based Pruning Method for CNN Compression", 2017."""

    name = "entropy"
    description = "Entropy of the unit's activation over the calibration set (low = little information)."
    granularities = ("neuron", "channel", "head")
    needs_data = True
    source = "in"

    def __init__(self, seed: int = 0, bins: int = 16):
        super().__init__(seed)
        self.bins = bins

    def prepare(self, model, layers, calib):
        return collect_input_stats(model, layers, calib)

    def input_scores(self, name, module, state):
        st = _require_stats(state, name, self.name)
        a = torch.cat(st.per_example, 0)  # (B, C)
        lo, hi = a.min(0).values, a.max(0).values
        span = (hi - lo).clamp_min(1e-12)
        idx = ((a - lo) / span * self.bins).long().clamp_(0, self.bins - 1)  # (B, C)
        counts = torch.zeros(self.bins, a.shape[1], device=a.device)
        counts.scatter_add_(0, idx, torch.ones_like(a))
        p = counts / a.shape[0]
        ent = -(p * torch.log2(p.clamp_min(1e-12))).sum(0)
        return torch.where(hi - lo > 0, ent, torch.zeros_like(ent))
