"""Importance criteria: the base class, the registry and shared helpers.

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

from core.errors import PrunescopeError
from core.ground.registry import Registry

CRITERIA: Registry[type["Criterion"]] = Registry("criterion")


def register_criterion(cls: type["Criterion"]) -> type["Criterion"]:
    """Class decorator: add a criterion to the registry under ``cls.name``."""
    CRITERIA.register(cls.name, cls)
    return cls


def criteria_for(granularity: str) -> list[str]:
    """The registered criteria that score units of ``granularity`` ("weight", "neuron",
    "channel" or "head"), in registry order: what a picker offers."""
    return [n for n, c in CRITERIA.items() if granularity in c.granularities]


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
            raise PrunescopeError(f"criterion {self.name!r} supports granularities {self.granularities}, "
                             f"not {granularity!r}")
        if self.needs_data and calib is None:
            raise PrunescopeError(f"criterion {self.name!r} needs a calibration batch")
        state = self.prepare(model, layers, calib)
        if granularity == "weight":
            return LazyScores(layers, lambda n, m: self.weight_scores(n, m, state))
        return LazyScores(layers, lambda n, m: self.unit_scores(n, m, state))

    def prepare(self, model: nn.Module, layers: dict[str, nn.Module], calib) -> Any:
        """Collect what the scorers need (activations, gradients); default: nothing."""
        return None

    def weight_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per weight, shaped like ``module.weight``."""
        raise PrunescopeError(f"criterion {self.name!r} has no weight-level scores")

    def unit_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per output unit; default: sum of the weight scores over the unit."""
        if self.source == "in":
            raise PrunescopeError(f"criterion {self.name!r} scores a unit by the layers that read it; "
                             "use core.structured.unit_scores(model, layer, ...) for per-unit scores")
        s = self.weight_scores(name, module, state)
        return s.reshape(s.shape[0], -1).sum(1)

    def input_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per input channel of ``module`` (criteria with ``source = "in"``)."""
        raise PrunescopeError(f"criterion {self.name!r} has no input-channel scores")


# --------------------------------------------------------------------------------------
# Helpers shared by the criteria
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


__all__ = ["CRITERIA", "Criterion", "LazyScores", "register_criterion", "get_criterion", "criteria_for"]
