"""Which units of one layer each criterion would prune at the same ratio."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from core.errors import ModelError, StepError
from core.ground.constraints import Fraction, Options, check_args
from core.prune.criteria import CRITERIA
from core.prune.structured.analysis import unit_scores
from core.prune.structured.graph import UNIT_GRANULARITIES


def compare_criteria(model: nn.Module, layer: str, criteria: Iterable[str], ratio: float,
                     granularity: str, ctx=None, *, seed: int = 0, example: torch.Tensor | None = None,
                     calib=None):
    """Which units of ``layer`` each criterion prunes at the same ``ratio``.

    Returns:
        ``(jaccard, grid)``: a criteria x criteria DataFrame of Jaccard overlaps of the
        pruned sets (1.0 where both prune nothing), and a units x criteria boolean
        DataFrame (True = pruned). Criteria that do not support the granularity are left out.

    Raises:
        PrunescopeError: ``ratio`` is not in [0, 1], bad granularity, criterion or layer.
    """
    import pandas as pd

    check_args("compare_criteria", {"ratio": Fraction()}, error=StepError, ratio=ratio)
    check_args("compare_criteria", {"granularity": Options(UNIT_GRANULARITIES)}, error=ModelError,
               granularity=granularity)
    grid = {}
    n = None
    for c in criteria:
        cls = CRITERIA.get(c)
        if granularity not in cls.granularities:
            continue
        s = unit_scores(model, layer, c, granularity, ctx, seed=seed, example=example, calib=calib)
        n = len(s)
        k = min(int(round(ratio * n)), n - 1)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.sort(s, stable=True).indices[:k]] = True
        grid[c] = mask.numpy()
    names = list(grid)
    jac = pd.DataFrame(1.0, index=names, columns=names)
    for a in names:
        for b in names:
            inter = (grid[a] & grid[b]).sum()
            union = (grid[a] | grid[b]).sum()
            jac.loc[a, b] = float(inter / union) if union else 1.0
    table = pd.DataFrame(grid, index=pd.RangeIndex(n or 0, name="unit"))
    return jac, table


__all__ = ["compare_criteria"]
