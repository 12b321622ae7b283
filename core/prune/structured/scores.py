"""Scores of units: per layer from the criterion, combined per group, normalised.

Inside a group each layer's scores are divided by their mean absolute value, then
averaged over the group's layers (a head averages its ``head_dim`` channels). Finally
every group's scores are divided by their mean absolute value, so 1.0 is an average
unit of its layer: the scale of the histograms and of every structured threshold.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import PrunescopeError
from core.prune.criteria import get_criterion
from core.prune.masks import prunable_layers
from core.prune.structured.graph import UnitGroup


def _norm(s: torch.Tensor) -> torch.Tensor:
    m = s.abs().mean()
    return s / m if float(m) > 0 else s


def _group_scores(group: UnitGroup, crit, state, mods: dict) -> torch.Tensor:
    """Normalised scores of one group's units (see the module docstring)."""
    n_root = group.n_units if group.unit_of_root is None else len(group.unit_of_root)
    acc = torch.zeros(n_root)
    used = 0
    for mem in group.members:
        if mem.role != crit.source:
            continue
        per = crit.unit_scores(mem.name, mods[mem.name], state).detach().float().flatten().cpu()
        ok = mem.idxs < len(per)  # Torch-Pruning maps a concatenation's indices past a member's own (RAFT)
        r = torch.zeros(n_root).scatter_add_(0, mem.root_idxs[ok], per[mem.idxs[ok]])
        acc += _norm(r)
        used += 1
    if used == 0:
        what = "produces" if crit.source == "out" else "reads"
        raise PrunescopeError(f"criterion {crit.name!r} needs a Linear/Conv layer that {what} the units of "
                         f"{group.name!r}; pick another criterion for this layer")
    acc /= used
    if group.unit_of_root is not None:  # mean over the root channels of each unit
        u = group.unit_of_root
        acc = torch.zeros(group.n_units).scatter_add_(0, u, acc) / torch.bincount(u, minlength=group.n_units)
    if not torch.isfinite(acc).all():
        raise PrunescopeError(f"criterion {crit.name!r} gave non-finite scores for {group.name!r}")
    return _norm(acc)


def score_groups(model: nn.Module, groups: list[UnitGroup], criterion: str, seed: int,
                 calib) -> dict[str, torch.Tensor]:
    """Normalised scores of every group's units (see the module docstring).

    Each group's layers on the criterion's side (``source``: the producing layers, or the
    layers reading the units) are scored by its ``unit_scores``.

    Raises:
        PrunescopeError: the criterion does not score these units, needs calibration
            data and got none, has no layer to read in a group, or gives non-finite scores.
    """
    crit = get_criterion(criterion, seed=seed)
    crit.check(groups[0].granularity if groups else "channel", calib)
    layers = prunable_layers(model)
    needed = {m.name for g in groups for m in g.members if m.role == crit.source}
    state = crit.prepare(model, {n: layers[n] for n in layers if n in needed}, calib)
    mods = dict(model.named_modules())
    return {g.name: _group_scores(g, crit, state, mods) for g in groups}


__all__ = ["score_groups"]
