"""Removing the selected units, with everything coupled to them, from a copy."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch import nn

from core.models import clone_model
from core.plan.report import UNIT_NORMALISED, StepReport

from .analysis import (all_unit_scores, analysis, calibration_for, example_input, nonempty,
                       validate_granularity)
from .graph import build_graph, unit_groups
from .scores import score_groups
from .select import Selection, select


def _prune_copy(model: nn.Module, example: torch.Tensor, step, scores: dict | None, calib
                ) -> tuple[nn.Module, Selection]:
    new = clone_model(model)
    dg, output_layer = build_graph(new, example)
    groups = nonempty(unit_groups(new, dg, output_layer, step.granularity), step.granularity)
    if scores is None:
        scores = score_groups(new, groups, step.criterion, step.seed, calib)  # `new` still equals `model`
    sel = select(groups, scores, step)
    mods = dict(new.named_modules())
    for g in groups:
        units = sel.pruned[g.name]
        if not units:
            continue
        root = mods[g.root]
        pruner = dg.get_pruner_of_module(root)
        fn = pruner.prune_out_channels if g.root_out else pruner.prune_in_channels
        dg.get_pruning_group(root, fn, g.root_channels(units)).prune(record_history=False)
        if g.granularity == "head":
            mods[g.name].num_heads -= len(units)
    trainable = any(p.requires_grad for p in model.parameters())
    for p in new.parameters():  # Torch-Pruning makes new Parameters; keep the source's flag
        p.requires_grad_(trainable)
    new.eval()
    return new, sel


def structured_prune(model: nn.Module, example: torch.Tensor, *, granularity: str, criterion: str = "l1",
                     sparsity: float | None = None, threshold: float | None = None,
                     layers: Sequence = (), seed: int = 0, calib=None) -> tuple[nn.Module, Selection]:
    """Remove units of ``model`` without a plan (a copy is pruned; ``model`` is not changed).

    Args:
        model: the model to prune.
        example: an example input batch (for tracing the dependency graph).
        granularity: "neuron" | "channel" | "head".
        criterion: importance criterion name.
        sparsity / threshold: the global amount (fraction of units, or a threshold in
            normalised score units); ``layers``: ``LayerOverride``s per layer.
        seed: seed of the criterion (random); the calibration batch is ``calib``.
        calib: ``(x, y)`` for data-driven criteria.

    Returns:
        ``(pruned model, selection)``.

    Raises:
        PrunescopeError: bad granularity / criterion / override, or no units to prune.
    """
    from ..step import Prune

    validate_granularity(granularity)
    step = Prune(criterion=criterion, granularity=granularity, sparsity=sparsity, threshold=threshold,
                 layers=tuple(layers), seed=seed)
    return _prune_copy(model, example, step, None, calib)


def structured_prune_step(step, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
    """Build the model of a ``Prune`` step with granularity neuron / channel / head.

    The input model is not changed; the same step on the same model gives identical
    weights. Scores come from the analysis memoised for ``model`` in ``ctx``.

    Returns:
        ``(pruned model, report)``: per group its threshold (normalised score), units
        removed of units, the removed indices, and warnings (a layer kept at one unit).

    Raises:
        PrunescopeError: bad granularity, criterion or override; the model has no such units.
    """
    validate_granularity(step.granularity)
    calib = calibration_for(step.criterion, ctx, step.seed)
    scores = all_unit_scores(model, step.criterion, step.granularity, ctx, seed=step.seed, calib=calib)
    new, sel = _prune_copy(model, example_input(ctx, step.seed), step, scores, calib)
    units = {g: (len(p), len(sel.scores[g])) for g, p in sel.pruned.items()}
    report = StepReport("prune", thresholds=dict(sel.thresholds), threshold_unit=UNIT_NORMALISED,
                        global_threshold=sel.global_threshold, units=units, unit_name=step.granularity,
                        removed={g: tuple(p) for g, p in sel.pruned.items()}, warnings=list(sel.warnings))
    report.summary = f"removed {report.pruned:,} of {report.total:,} {step.granularity}s"
    return new, report


__all__ = ["structured_prune", "structured_prune_step"]
