"""Pruning: importance criteria, thresholds, weight masks and structured removal.

* ``step.py``: the ``Prune`` step and ``LayerOverride`` (the plan's data);
* ``criteria/``: the importance criteria registry;
* ``thresholds.py``: the one k-th-value threshold helper;
* ``masks.py``: weight-level pruning (masks);
* ``structured/``: neurons, channels and heads removed through Torch-Pruning;
* ``nm.py``: N:M (2:4) semi-structured sparsity, and its CUDA sparse kernels;
* ``reconstruct.py``: one-shot reconstruction (SparseGPT): prune and update the weights that stay.
"""
from core.prune.criteria import (
           CRITERIA,
           Criterion,
           SummedUnits,
           UnitCriterion,
           WeightCriterion,
           get_criterion,
           register_criterion,
)
from core.prune.masks import PRUNABLE_TYPES, prunable_layers
from core.prune.nm import NMSparsity
from core.prune.reconstruct import Reconstruct
from core.prune.step import GRANULARITIES, UNIT_GRANULARITIES, LayerOverride, Prune, threshold_unit

__all__ = ["NMSparsity", "Prune", "LayerOverride", "GRANULARITIES", "UNIT_GRANULARITIES", "threshold_unit", "CRITERIA",
           "Criterion", "WeightCriterion", "UnitCriterion", "SummedUnits", "get_criterion", "register_criterion",
           "PRUNABLE_TYPES", "prunable_layers", "Reconstruct"]
