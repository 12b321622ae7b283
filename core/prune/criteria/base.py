"""Importance criteria: the two kinds, the registry and shared helpers.

A criterion is a small class registered in :data:`CRITERIA`; ``__init__`` only stores
hyperparameters (the seed, a bin count). Higher score = more important; the lowest
scores are pruned first. There are two kinds, each with one method to write (as
``torch.nn.utils.prune.BasePruningMethod.compute_mask`` or Torch-Pruning's
``Importance.__call__``):

* :class:`WeightCriterion`: ``weight_scores(name, module, state)``, one score per
  weight, shaped like ``module.weight`` (granularity ``"weight"``). A criterion whose
  scores are exactly ``|w|`` says so with ``scores_are_abs_weight = True``: weight
  pruning then thresholds ``w`` itself and never allocates ``|w|``.
* :class:`UnitCriterion`: ``unit_scores(name, module, state)``, one score per unit
  (granularities ``"neuron"``, ``"channel"``, ``"head"``), read where ``source`` says:
  ``"out"``, the layer producing the unit (one score per output unit, dim 0 of the
  weight); ``"in"``, a layer reading it (one score per input channel: its outgoing
  weights, or the activation as it enters that layer, after BatchNorm and the
  nonlinearity). ``core.prune.structured`` combines these per coupled group (residual
  adds, concatenations) and per attention head.

A criterion may be both: :class:`SummedUnits` is a weight criterion whose unit score is
the sum of its weights' scores; a class deriving from both kinds writes both methods.
``granularities`` follows from the kinds a class derives from (a class may set it to
fewer). Data-driven criteria (``needs_data``) collect what they need in ``prepare`` on a
private copy of the model, so no hook, ``.grad`` or ``requires_grad`` change is left on
the model they score; its result is the ``state`` both methods receive.

Calling a criterion, ``crit(model, layers, granularity, calib)``, checks the
granularity and the calibration batch and returns layer name -> scores, computed
lazily per layer, so a global pass over a large model never holds every score tensor.

Registering your own::

    from core.prune.criteria import SummedUnits, register_criterion

    @register_criterion
    class Cubed(SummedUnits):
        '''|w|³ per weight; per unit the sum over its weights (name the paper here).'''

        name = "cubed"
        description = "|w|³: magnitude, sharpened."

        def weight_scores(self, name, module, state):
            return module.weight.detach().abs().pow(3)

It is then offered by the app's selectors, the CLI (``prunescope criteria``) and
``Prune(criterion="cubed", ...)``; register it before the plans that name it are built.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from core.errors import PrunescopeError
from core.ground.registry import Registry
from core.ground.units import UNIT_GRANULARITIES

CRITERIA: Registry[type[Criterion]] = Registry("criterion")


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: add a criterion to the registry under ``cls.name``."""
    CRITERIA.register(cls.name, cls)
    return cls


def criteria_for(granularity: str) -> list[str]:
    """The registered criteria that score units of ``granularity`` ("weight", "neuron",
    "channel" or "head"), in registry order: what a picker offers."""
    return [n for n, c in CRITERIA.items() if granularity in c.granularities]


def get_criterion(name: str | Criterion, **kwargs) -> Criterion:
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


class Criterion(abc.ABC):  # noqa: B024 - abstract by intent; the two kinds below hold the abstract methods
    """What every criterion has: its registry facts, its seed, and ``prepare``.

    Derive from :class:`WeightCriterion`, :class:`UnitCriterion` (or both), not from
    this class: they hold the one method a criterion writes.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line shown in the app and by `prunescope criteria`
    granularities: ClassVar[tuple[str, ...]] = ()  # set from the kinds a class derives from
    needs_data: ClassVar[bool] = False  # True: uses the calibration batch
    _scores: ClassVar[tuple[str, ...]] = ()  # the granularities a kind scores (set by the two kinds)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "granularities" not in cls.__dict__:
            kinds = {g for k in cls.__mro__ for g in k.__dict__.get("_scores", ())}
            cls.granularities = tuple(g for g in ("weight", *UNIT_GRANULARITIES) if g in kinds)

    def __init__(self, seed: int = 0):
        self.seed = seed

    def prepare(self, model: nn.Module, layers: dict[str, nn.Module], calib) -> Any:
        """What the scoring method needs (activations, gradients), collected on a private
        copy of ``model``; passed to it as ``state``. Default: nothing."""
        return None

    def check(self, granularity: str, calib) -> None:
        """Raise unless this criterion scores ``granularity`` and has the data it needs.

        Raises:
            PrunescopeError: the granularity is not supported, or calibration data is
                needed and ``calib`` is None.
        """
        if granularity not in self.granularities:
            raise PrunescopeError(f"criterion {self.name!r} supports granularities {self.granularities}, "
                                  f"not {granularity!r}")
        if self.needs_data and calib is None:
            raise PrunescopeError(f"criterion {self.name!r} needs a calibration batch")

    def __call__(self, model: nn.Module, layers: dict[str, nn.Module], granularity: str = "weight",
                 calib: tuple[torch.Tensor, torch.Tensor] | None = None) -> Mapping[str, torch.Tensor]:
        """Scores of ``layers`` of ``model``: a lazy mapping layer name -> tensor (per weight
        for ``"weight"``; per output unit for the unit granularities, ``source="out"`` only).

        Raises:
            PrunescopeError (a ValueError): the criterion does not support ``granularity``,
                needs calibration data and got none, or scores units by the layers reading
                them (``source="in"``: use ``core.prune.structured.unit_scores``).
        """
        self.check(granularity, calib)
        if granularity == "weight":
            state = self.prepare(model, layers, calib)
            return LazyScores(layers, lambda n, m: self.weight_scores(n, m, state))
        if self.source == "in":
            raise PrunescopeError(f"criterion {self.name!r} scores a unit by the layers that read it; "
                                  "use core.prune.structured.unit_scores(model, layer, ...) for per-unit scores")
        state = self.prepare(model, layers, calib)
        return LazyScores(layers, lambda n, m: self.unit_scores(n, m, state))


class WeightCriterion(Criterion):
    """A criterion that scores single weights (granularity ``"weight"``)."""

    _scores = ("weight",)
    scores_are_abs_weight: ClassVar[bool] = False  # True: the scores are exactly |w| (masks use w itself)

    @abc.abstractmethod
    def weight_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """One score per weight of layer ``name``, shaped like ``module.weight``."""


class UnitCriterion(Criterion):
    """A criterion that scores whole units (granularities neuron, channel and head)."""

    _scores = UNIT_GRANULARITIES
    source: ClassVar[str] = "out"  # "out": scored by the producing layer; "in": by the layers reading it

    @abc.abstractmethod
    def unit_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        """1-D scores of layer ``name``: one per output unit (``source="out"``) or one per
        input channel (``source="in"``)."""


class SummedUnits(WeightCriterion, UnitCriterion):
    """A weight criterion whose unit score is the sum of its weights' scores (``source="out"``)."""

    def unit_scores(self, name: str, module: nn.Module, state: Any) -> torch.Tensor:
        s = self.weight_scores(name, module, state)
        return s.reshape(s.shape[0], -1).sum(1)


# --------------------------------------------------------------------------------------
# Helpers shared by the criteria
# --------------------------------------------------------------------------------------

def unit_rows(t: torch.Tensor) -> torch.Tensor:
    """(units, rest): one row per output unit (dim 0)."""
    return t.reshape(t.shape[0], -1)


def input_columns(module: nn.Module) -> torch.Tensor:
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


__all__ = ["CRITERIA", "Criterion", "WeightCriterion", "UnitCriterion", "SummedUnits", "LazyScores",
           "register_criterion", "get_criterion", "criteria_for", "unit_rows", "input_columns"]
