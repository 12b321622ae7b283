"""Helpers for tests on models: the names of the demo models, a structured prune step run
on its own, and a small seeded MLP."""
from __future__ import annotations

import torch

DEMO_MODELS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"]


def structured_prune(model, example, *, granularity: str, criterion: str = "l1", sparsity=None, threshold=None,
                     layers=(), seed: int = 0, calib=None):
    """A structured ``Prune`` step on ``model`` without a plan or an apply context, its
    fields given as arguments: ``(pruned copy, selection)``; ``selection.warnings`` names
    the groups left out. ``example`` traces the graph and checks the pruned copy runs;
    ``calib`` is ``(x, y)`` for data-driven criteria."""
    from core.prune import Prune
    from core.prune.structured.analysis import Analysis, nonempty
    from core.prune.structured.prune import remove_units
    from core.prune.structured.scores import score_groups

    step = Prune(criterion=criterion, granularity=granularity, sparsity=sparsity, threshold=threshold,
                 layers=tuple(layers), seed=seed)
    an = Analysis(model, example)
    groups = nonempty(an.groups(granularity), granularity, an.skipped[granularity], model)
    scores = score_groups(an.copy, groups, criterion, seed, calib)
    new, sel, warns = remove_units(model, example, step, groups, scores, an.skipped[granularity])
    sel.warnings = warns + list(sel.warnings)
    return new, sel


def small_mlp(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.ReLU(),
                            torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()
