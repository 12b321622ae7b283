"""The ``Prune`` step: remove the units whose importance is below a threshold.

``granularity="weight"`` masks single weights (``core.prune.masks``); ``"neuron"``,
``"channel"`` and ``"head"`` remove whole units with everything coupled to them
(``core.prune.structured``). Either way ``build`` returns the new model and a
:class:`~core.plan.report.StepReport` holding each layer's threshold in the unit it was
decided in (:func:`threshold_unit`), how many units it selected and any warnings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from core.errors import StepError, echo
from core.ground.constraints import Checked, Fraction, Interval, Items, Name, Options, Seed
from core.ground.units import GRANULARITIES, UNIT_GRANULARITIES
from core.plan.report import UNIT_ABS_WEIGHT, UNIT_NORMALISED, UNIT_SCORE, StepReport
from core.plan.step import Step, register_step
from core.prune.masks import weight_prune
from core.prune.structured import structured_prune_step


def threshold_unit(criterion: str, granularity: str) -> str:
    """The unit a ``Prune`` threshold is read in for this criterion and granularity.

    ``|w|`` for magnitude (``l1``) on weights; the criterion's raw score for other
    weight-level criteria; for neurons / channels / heads the score divided by its
    layer's mean |score| (1.0 = an average unit of that layer).
    """
    if granularity != "weight":
        return UNIT_NORMALISED
    return UNIT_ABS_WEIGHT if criterion == "l1" else UNIT_SCORE


@dataclass(frozen=True)
class LayerOverride(Checked):
    """A per-layer amount that replaces the global one for that layer."""

    constraints = {"layer": Name(), "sparsity": Fraction(optional=True),
                   "threshold": Interval(None, None, optional=True)}
    layer: str  # module path, e.g. "features.0.0"
    sparsity: float | None = None  # fraction of the layer's units to prune, in [0, 1]
    threshold: float | None = None  # or a threshold in the step's threshold unit

    def _owner(self) -> str:
        return "layer override"

    def check(self):
        if (self.sparsity is None) == (self.threshold is None):
            raise StepError(f"layer {self.layer!r}: give exactly one of sparsity or threshold")


@register_step
@dataclass(frozen=True)
class Prune(Step):
    """Prune units whose importance is below a threshold.

    The global amount (``sparsity`` or ``threshold``, or neither for overrides only)
    applies to every prunable layer; an entry in ``layers`` overrides it for one layer.
    A unit is pruned when its score is strictly below the threshold; a sparsity is
    turned into the threshold that prunes that fraction. Thresholds are in the unit
    :func:`threshold_unit` names.
    """

    op: ClassVar[str] = "prune"
    constraints = {"criterion": Name(), "granularity": Options(GRANULARITIES),
                   "sparsity": Fraction(optional=True), "threshold": Interval(None, None, optional=True),
                   "layers": Items(LayerOverride), "seed": Seed(),
                   "round_to": Interval(1, 4096, integer=True, optional=True)}
    criterion: str = "l1"  # importance criterion name (core.prune.criteria registry)
    granularity: str = "weight"  # "weight" (masks) | "neuron" | "channel" | "head" (removed)
    sparsity: float | None = None  # global fraction of prunable units to prune, in [0, 1]
    threshold: float | None = None  # or a global threshold, in threshold_unit(criterion, granularity)
    layers: tuple[LayerOverride, ...] = ()  # per-layer overrides
    seed: int = 0  # seed of the calibration batch and of random criteria
    round_to: int | None = None  # structured: each layer keeps a multiple of this many units (fast kernels)

    def check(self):
        if self.sparsity is not None and self.threshold is not None:
            raise StepError("prune: give a global sparsity or a global threshold, not both")
        if self.sparsity is None and self.threshold is None and not self.layers:
            raise StepError("prune: a prune step needs a sparsity, a threshold, or per-layer overrides")
        if self.round_to not in (None, 1) and self.granularity == "weight":
            raise StepError("prune.round_to applies to neurons, channels and heads (kept widths), not to weights")
        seen = set()
        for o in self.layers:
            if o.layer in seen:
                raise StepError(f"prune.layers: layer {o.layer!r} is overridden twice")
            seen.add(o.layer)

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        kwargs = dict(kwargs)
        layers = kwargs.get("layers", ())
        if not isinstance(layers, (list, tuple)):
            raise StepError(f"prune.layers must be a list of overrides, got {echo(layers)}")
        out = []
        for o in layers:
            if isinstance(o, dict):
                unknown = set(o) - {"layer", "sparsity", "threshold"}
                if unknown or "layer" not in o:
                    raise StepError(f"bad layer override {echo(o)}; expected {{'layer': ..., 'sparsity': ...}}")
                out.append(LayerOverride(**o))
            elif isinstance(o, (list, tuple)) and len(o) == 2:
                out.append(LayerOverride(layer=o[0], sparsity=o[1]))
            else:
                raise StepError(f"bad layer override {echo(o)}; expected {{'layer': ..., 'sparsity': ...}}")
        kwargs["layers"] = tuple(out)
        return kwargs

    @property
    def unit(self) -> str:
        """The unit of this step's thresholds."""
        return threshold_unit(self.criterion, self.granularity)

    def override_for(self, layer: str) -> LayerOverride | None:
        for o in self.layers:
            if o.layer == layer:
                return o
        return None

    def with_override(self, layer: str, *, sparsity: float | None = None,
                      threshold: float | None = None) -> Prune:
        """A copy with the override for ``layer`` set (or cleared when both are None)."""
        rest = tuple(o for o in self.layers if o.layer != layer)
        if sparsity is not None or threshold is not None:
            rest = rest + (LayerOverride(layer, sparsity=sparsity, threshold=threshold),)
        return dataclasses.replace(self, layers=rest)

    def with_criterion(self, criterion: str, report: StepReport) -> Prune:
        """This step scored by ``criterion`` instead, pruning the same amount.

        A threshold is in the old criterion's unit, so it becomes the fraction this step
        pruned, read from its ``report`` (over the layers without an override); so does a
        per-layer threshold override (that layer's fraction). Sparsities are kept.
        """
        frac = {n: p / t for n, (p, t) in report.units.items() if t}
        sparsity = self.sparsity
        if sparsity is None and self.threshold is not None:
            glob = [pt for n, pt in report.units.items() if self.override_for(n) is None]
            sparsity = sum(p for p, _ in glob) / max(1, sum(t for _, t in glob))
        layers = tuple(o if o.threshold is None else
                       LayerOverride(o.layer, sparsity=min(1.0, frac.get(o.layer, sparsity or 0.0)))
                       for o in self.layers)
        return Prune(criterion=criterion, granularity=self.granularity, sparsity=sparsity, layers=layers,
                     seed=self.seed, round_to=self.round_to)

    def build(self, model, ctx):
        """The pruned copy of ``model`` and the report of what was pruned."""
        if self.granularity == "weight":
            return weight_prune(self, model, ctx)
        return structured_prune_step(self, model, ctx)

    def describe(self) -> str:
        amt = (f"sparsity {self.sparsity:.1%}" if self.sparsity is not None else
               f"threshold {self.unit} < {self.threshold:.4g}" if self.threshold is not None else "overrides only")
        extra = f", {len(self.layers)} layer override(s)" if self.layers else ""
        if self.round_to and self.round_to > 1:
            extra += f", widths rounded to multiples of {self.round_to}"
        return f"prune {self.granularity} by {self.criterion}: {amt}{extra}"


__all__ = ["Prune", "LayerOverride", "GRANULARITIES", "UNIT_GRANULARITIES", "threshold_unit"]
