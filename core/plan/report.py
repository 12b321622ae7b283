"""What a step decided, kept next to the model it built.

Every step kind's ``build(model, ctx)`` returns ``(model, StepReport)``. The workspace
keeps the reports of its current plan; the app, the CLI and the figures read them
instead of recomputing a decision (a threshold, the units removed, a bridge's fit).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The unit a prune threshold is read in (see core.prune.step.threshold_unit).
UNIT_ABS_WEIGHT = "|w|"  # weight magnitude (criterion l1, weight granularity)
UNIT_SCORE = "score"  # the criterion's raw per-weight score (other weight-level criteria)
UNIT_NORMALISED = "normalised score"  # unit scores divided by their layer's mean |score| (1 = average unit)


@dataclass(frozen=True)
class Seam:
    """One place where two blocks that were not neighbours meet, and what bridges it."""

    where: str  # "layers.1 -> layers.3", "the container input -> digits_cnn:features.1"
    bridge: str  # "identity" | "lstsq"
    in_shape: tuple[int, ...]  # one example's activation shape entering the bridge
    out_shape: tuple[int, ...]  # shape the next block expects
    fit_error: float | None = None  # least squares: residual / variance of the target (1 - R^2); None: identity


@dataclass
class StepReport:
    """The decisions of one step, in the units they were made in."""

    op: str  # the step's op ("prune", "cut", ...)
    summary: str = ""  # one line: what the step did
    thresholds: dict[str, float] = field(default_factory=dict)  # layer (weights) or group (units) -> threshold
    threshold_unit: str | None = None  # UNIT_ABS_WEIGHT | UNIT_SCORE | UNIT_NORMALISED
    global_threshold: float | None = None  # the threshold of every layer without an override
    units: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer/group -> (pruned, total) weights or units
    unit_name: str = ""  # what ``units`` counts: "weight", "neuron", "channel", "head"
    removed: dict[str, tuple[int, ...]] = field(default_factory=dict)  # group -> removed unit indices (structured)
    newly_zeroed: int | None = None  # weights set to zero by this step that were not zero before it
    seams: list[Seam] = field(default_factory=list)  # surgery: every bridge the step inserted
    warnings: list[str] = field(default_factory=list)  # e.g. "kept 1 unit of features.0"
    info: dict = field(default_factory=dict)  # training steps: losses, before / after, steps run

    @property
    def pruned(self) -> int:
        """Units (or weights) the step selected, over all layers."""
        return sum(p for p, _ in self.units.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.units.values())


__all__ = ["StepReport", "Seam", "UNIT_ABS_WEIGHT", "UNIT_SCORE", "UNIT_NORMALISED"]
