"""Importance criteria: one score per weight or per prunable unit (see ``base.py`` for
the two kinds, :class:`WeightCriterion` and :class:`UnitCriterion`, and how to register
your own).

``magnitude.py`` holds the weight-only criteria, ``activations.py`` the data-driven ones.
Importing this package registers them all in :data:`CRITERIA`.
"""
from core.prune.criteria import activations, magnitude  # noqa: F401 - registers the criteria
from core.prune.criteria.activations import ActivationCriterion, collect_input_stats, weight_gradients
from core.prune.criteria.base import (
    CRITERIA,
    Criterion,
    LazyScores,
    SummedUnits,
    UnitCriterion,
    WeightCriterion,
    criteria_for,
    get_criterion,
    register_criterion,
)

__all__ = ["CRITERIA", "Criterion", "WeightCriterion", "UnitCriterion", "SummedUnits", "ActivationCriterion",
           "LazyScores", "get_criterion", "register_criterion", "criteria_for", "collect_input_stats",
           "weight_gradients"]
