"""A source model's structure, analysed once: a private copy, its graph, groups, scores.

The analysis of a model is kept in the apply context's memo of that model
(``ctx.memo(model)``), so the Prune page's histogram, unit table and criteria
comparison, and the step itself, trace and score once. Without a context nothing is
cached.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ModelError, PrunescopeError
from core.ground.constraints import Options, check_args
from core.prune.criteria import CRITERIA
from core.prune.structured.graph import UNIT_GRANULARITIES, UnitGroup, build_graph, unit_groups
from core.prune.structured.scores import score_groups
from core.prune.structured.select import Selection, find_group, units_to_remove
from core.prune.structured.swin import why_no_heads
from core.sources.bases import clone_model


class Analysis:
    """A private copy of a source model with its graph, groups and cached scores, what
    the model returns, and which pruned widths were checked to run (``prune.py``).

    Like every fact in the memo it assumes the source model is not changed in place
    once analysed; a pruned model is built from ``copy`` and a copy of ``dg``
    (``tp_compat.copy_graph``), never traced again."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.copy = clone_model(model)
        out: list = []  # the trace's forward on ``example`` gives the output shape too
        # the last Linear / Conv run, and every layer feeding an output leaf (never pruned: graph.build_graph)
        self.dg, self.output_layer, self.output_layers = build_graph(self.copy, example, out)
        self._groups: dict[str, list[UnitGroup]] = {}
        self.skipped: dict[str, list[tuple[str, str]]] = {}  # granularity -> (layer, why it was left out)
        self.scores: dict[tuple, dict[str, torch.Tensor]] = {}
        # example batch shape -> the shape of each leaf of the model's output (``metrics.outputs.leaves``)
        self.outputs: dict[tuple, dict[str, tuple]] = {tuple(example.shape): out[-1]} if out else {}
        # (example shape, granularity, (group, units removed) per group) -> groups left out, with why
        self.checked: dict[tuple, list[tuple[str, str]]] = {}

    def groups(self, granularity: str) -> list[UnitGroup]:
        if granularity not in self._groups:
            skipped: list[tuple[str, str]] = []
            self._groups[granularity] = unit_groups(self.copy, self.dg, self.output_layers, granularity, skipped)
            self.skipped[granularity] = skipped
        return self._groups[granularity]


def example_input(ctx, seed: int = 0) -> torch.Tensor:
    """One example of the calibration batch: what the graph is traced with."""
    return ctx.calibration(seed)[0][:1]


def calibration_for(criterion: str, ctx, seed: int):
    """The calibration batch when ``criterion`` needs data, else None."""
    return ctx.calibration(seed) if CRITERIA.get(criterion).needs_data else None


def granularities(model: nn.Module, ctx) -> list[str]:
    """"weight" plus each unit granularity ``model`` has prunable units of, in
    ``core.ground.units.GRANULARITIES`` order (memoised in ``ctx``). A granularity the model has no units
    of (a ``PrunescopeError``: no such layers, a model Torch-Pruning cannot trace) is left
    out; a bug propagates."""
    memo = ctx.memo(model)
    if "granularities" not in memo:
        out = ["weight"]
        for g in UNIT_GRANULARITIES:
            try:
                if group_info(model, g, ctx):
                    out.append(g)
            except PrunescopeError:
                continue
        memo["granularities"] = out
    return list(memo["granularities"])


_UNITS = {"granularity": Options(UNIT_GRANULARITIES)}  # what structured pruning removes


def nonempty(groups: list[UnitGroup], granularity: str, skipped=(), model: nn.Module | None = None
             ) -> list[UnitGroup]:
    if not groups:
        hint = {"neuron": "Linear layers (other than the output layer)",
                "channel": "convolutions", "head": "attention modules with qkv/proj/num_heads"}[granularity]
        left = (f"; {len(skipped)} group(s) were left out because Torch-Pruning cannot follow them "
                f"(first: {skipped[0][0]}: {skipped[0][1]})" if skipped else "")
        why = why_no_heads(model) if granularity == "head" and model is not None else None
        raise ModelError(f"granularity {granularity!r}: the model has no prunable {hint}{left}"
                         + (f"; {why}" if why else ""))
    return groups


def analysis(model: nn.Module, ctx=None, *, example: torch.Tensor | None = None, seed: int = 0) -> Analysis:
    """The analysis of ``model`` (memoised in ``ctx`` when given)."""
    memo = ctx.memo(model) if ctx is not None else {}
    an = memo.get("structure")
    if an is None:
        an = memo["structure"] = Analysis(model, example if example is not None else example_input(ctx, seed))
    return an


def _scores_key(criterion: str, granularity: str, seed: int, calib) -> tuple:
    return (criterion, granularity, seed, None if calib is None else tuple(calib[0].shape))


def prunable_units(model: nn.Module, granularity: str, ctx=None, *,
                   example: torch.Tensor | None = None) -> dict[str, int]:
    """Prunable layers (unit groups) of ``model`` at ``granularity`` -> number of units.

    Args:
        model: the model (not changed; analysed on a private copy).
        granularity: "neuron", "channel" or "head".
        ctx: an ``ApplyContext`` (its calibration batch gives the example input), or
        example: an example input batch.

    Raises:
        ModelError: unknown granularity.
    """
    return {g.name: g.n_units for g in group_info(model, granularity, ctx, example=example)}


def group_info(model: nn.Module, granularity: str, ctx=None, *,
               example: torch.Tensor | None = None) -> list[UnitGroup]:
    """The unit groups (with coupled layers) of ``model`` at ``granularity``.

    Raises:
        ModelError: ``granularity`` is not "neuron", "channel" or "head".
    """
    check_args("group_info", _UNITS, error=ModelError, granularity=granularity)
    return list(analysis(model, ctx, example=example).groups(granularity))


def group_of(model: nn.Module, granularity: str, layer: str, ctx=None, *,
             example: torch.Tensor | None = None) -> UnitGroup | None:
    """The unit group ``layer`` belongs to, or None when it has no units of that kind."""
    try:
        return find_group(group_info(model, granularity, ctx, example=example), layer)
    except ModelError:
        return None


def all_unit_scores(model: nn.Module, criterion: str, granularity: str, ctx=None, *, seed: int = 0,
                    example: torch.Tensor | None = None, calib=None) -> dict[str, torch.Tensor]:
    """Normalised scores of every prunable group (cached per model, criterion, seed).

    Raises:
        PrunescopeError: unknown granularity or criterion, a criterion that does not support
            the granularity, or the model has no units of that granularity.
    """
    check_args("all_unit_scores", _UNITS, error=ModelError, granularity=granularity)
    if calib is None and ctx is not None:
        calib = calibration_for(criterion, ctx, seed)
    an = analysis(model, ctx, example=example, seed=seed)
    key = _scores_key(criterion, granularity, seed, calib)
    if key not in an.scores:
        groups = nonempty(an.groups(granularity), granularity, an.skipped.get(granularity, ()), model)
        an.scores[key] = score_groups(an.copy, groups, criterion, seed, calib)
    return an.scores[key]


def unit_scores(model: nn.Module, layer: str, criterion: str, granularity: str, ctx=None, *,
                seed: int = 0, example: torch.Tensor | None = None, calib=None) -> torch.Tensor:
    """Normalised scores (1.0 = the layer's mean) of one layer's units, ``(n_units,)``.

    ``layer`` may be a group's name or any layer producing its units.
    """
    scores = all_unit_scores(model, criterion, granularity, ctx, seed=seed, example=example, calib=calib)
    an = analysis(model, ctx, example=example, seed=seed)
    return scores[find_group(an.groups(granularity), layer).name]


def select_units(step, model: nn.Module, ctx=None, *, example: torch.Tensor | None = None,
                 calib=None) -> Selection:
    """What a structured ``Prune`` step would remove from ``model``, without pruning.

    For a step already in a plan, read its report instead (``Workspace.reports``).
    """
    check_args("select_units", _UNITS, error=ModelError, granularity=step.granularity)
    scores = all_unit_scores(model, step.criterion, step.granularity, ctx, seed=step.seed,
                             example=example, calib=calib)
    an = analysis(model, ctx, example=example, seed=step.seed)
    return units_to_remove(an.groups(step.granularity), scores, step)


__all__ = ["granularities", "Analysis", "analysis", "prunable_units", "group_info", "group_of", "all_unit_scores",
           "unit_scores", "select_units", "example_input", "calibration_for"]
