"""Which layers of a model weight-level pruning may mask: a fact about ``nn`` modules that
pruning, metrics and figures all read, so it lives in the ground layer (torch only)."""
from __future__ import annotations

from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose ``weight`` weight-level pruning may mask (Linear and Conv), in order.

    Args:
        model: any module.

    Returns:
        ``{qualified name: layer}`` in ``named_modules`` order.
    """
    return {n: m for n, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None}


__all__ = ["PRUNABLE_TYPES", "prunable_layers"]
