"""Importance criteria: one score per prunable unit.

A criterion is a small class registered in :data:`CRITERIA`. ``__init__`` only stores
hyperparameters; ``__call__(model, layers, granularity, calib)`` returns a mapping
from layer name to scores, computed lazily per layer so a global pass over a large
model never holds every score tensor at once.

* granularity ``"weight"``: a tensor shaped like the layer's weight.
* granularity ``"neuron"`` / ``"channel"`` / ``"head"``: a 1-D tensor, one score per
  output unit (dim 0 of the weight) — see ``core.structured`` for heads.

Higher score = more important; units with the lowest scores are pruned first.
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
        s = self.weight_scores(name, module, state)
        return s.reshape(s.shape[0], -1).sum(1)


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
