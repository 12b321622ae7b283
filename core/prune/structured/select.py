"""Which units a structured prune step removes.

A unit is pruned when its normalised score is strictly below the threshold; a sparsity
prunes exactly ``round(sparsity * units)`` lowest units (over all groups for the global
amount, inside the group for an override; ties are broken by group order, then unit
index), so a plan replays to identical weights. With ``round_to`` each group keeps the
multiple of it nearest to what the amount asked (fast kernels like round widths; a group
holding an ``nn.MultiheadAttention``'s width keeps a multiple of its head count too). At
least one unit of every group is kept: when an amount asks for all of them the best-scoring unit stays and a warning is
recorded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from core.errors import ModelError
from core.prune.structured.graph import UnitGroup
from core.prune.thresholds import threshold_for_k


@dataclass
class Selection:
    """Which units a structured prune step removes (nothing is pruned to build it)."""

    granularity: str
    criterion: str
    scores: dict[str, torch.Tensor]  # group name -> normalised scores, (n_units,)
    pruned: dict[str, list[int]]  # group name -> pruned unit indices (sorted)
    thresholds: dict[str, float]  # group name -> threshold in normalised score units
    global_threshold: float | None = None  # the threshold of every group without an override
    warnings: list[str] = field(default_factory=list)  # e.g. "kept 1 unit of ..."

    @property
    def n_pruned(self) -> int:
        return sum(len(v) for v in self.pruned.values())

    @property
    def n_units(self) -> int:
        return sum(len(v) for v in self.scores.values())


def find_group(groups: list[UnitGroup], layer: str) -> UnitGroup:
    """The group ``layer`` belongs to: its name, or any layer producing its units.

    Raises:
        ModelError: no group holds ``layer``; the message lists the prunable layers.
    """
    for g in groups:
        if layer == g.name or layer in g.producers:
            return g
    valid = ", ".join(g.name for g in groups[:16]) + (" ..." if len(groups) > 16 else "")
    kind = groups[0].granularity if groups else ""
    raise ModelError(f"layer {layer!r} has no prunable {kind} units; prunable layers: {valid or 'none'}")


def units_to_remove(groups: list[UnitGroup], scores: dict[str, torch.Tensor], step) -> Selection:
    """The units ``step`` (a structured ``Prune``) removes from ``groups`` scored by ``scores``.

    Raises:
        ModelError: an override names a layer without such units, or two overrides
            name one group.
    """
    by_group = {}
    for o in step.layers:
        g = find_group(groups, o.layer)
        if g.name in by_group:
            raise ModelError(f"layer {o.layer!r}: group {g.name!r} is overridden twice")
        by_group[g.name] = o
    pruned: dict[str, list[int]] = {g.name: [] for g in groups}
    thresholds: dict[str, float] = {}
    glob = [g for g in groups if g.name not in by_group]
    t_global = None
    if glob and step.threshold is not None:
        t_global = float(step.threshold)
        for g in glob:
            pruned[g.name] = torch.nonzero(scores[g.name] < t_global).flatten().tolist()
    elif glob and step.sparsity is not None:
        allv = torch.cat([scores[g.name] for g in glob])
        vals, order = torch.sort(allv, stable=True)
        k = int(round(step.sparsity * len(allv)))
        t_global = threshold_for_k(vals, k)
        bounds, start = [], 0
        for g in glob:
            bounds.append((start, start + g.n_units, g.name))
            start += g.n_units
        for c in order[:k].tolist():
            for lo, hi, name in bounds:
                if lo <= c < hi:
                    pruned[name].append(c - lo)
                    break
    if t_global is not None:
        for g in glob:
            thresholds[g.name] = t_global
    for name, o in by_group.items():
        s = scores[name]
        if o.threshold is not None:
            pruned[name] = torch.nonzero(s < o.threshold).flatten().tolist()
            thresholds[name] = float(o.threshold)
        else:
            vals, order = torch.sort(s, stable=True)
            k = int(round(o.sparsity * len(s)))
            pruned[name] = order[:k].tolist()
            thresholds[name] = threshold_for_k(vals, k)
    warns = []
    r0 = getattr(step, "round_to", None) or 1
    for g in groups:
        r = math.lcm(r0, getattr(g, "multiple", 1) or 1)  # e.g. an attention's width splits into its heads
        if r > 1:
            pruned[g.name] = _rounded(pruned[g.name], scores[g.name], g.n_units, r)
        p = sorted(pruned[g.name])
        if len(p) >= g.n_units:
            best = int(torch.argmax(scores[g.name]))
            p = [i for i in p if i != best]
            warns.append(f"{g.name}: the amount asks to remove all {g.n_units} {g.granularity}s; "
                         f"kept 1 (the best-scoring, #{best})")
        pruned[g.name] = p
    return Selection(step.granularity, step.criterion, scores, pruned, thresholds, t_global, warns)


def _rounded(pruned: list[int], scores: torch.Tensor, n: int, r: int) -> list[int]:
    """The pruned units adjusted so that the kept count is the multiple of ``r`` nearest to
    what the amount asked (at least ``r``; a layer of ``r`` units or fewer is not pruned).
    Extra units removed are the lowest-scoring kept ones; units given back are the
    highest-scoring pruned ones."""
    if n <= r:
        return []
    keep = n - len(pruned)
    target = min(n, max(r, int(round(keep / r)) * r))
    order = torch.sort(scores, stable=True).indices.tolist()  # lowest first
    chosen = set(pruned)
    if target < keep:  # prune more
        extra = [i for i in order if i not in chosen][:keep - target]
        chosen.update(extra)
    elif target > keep:  # give back the best pruned ones
        back = [i for i in reversed(order) if i in chosen][:target - keep]
        chosen.difference_update(back)
    return sorted(chosen)


__all__ = ["Selection", "find_group", "units_to_remove"]
