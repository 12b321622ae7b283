"""Optical-flow models as models of one input: torchvision's RAFT takes two images,
``forward(image1, image2, num_flow_updates)``, and returns the flow after each of its
refinements. prunescope runs every model on one batch tensor, so an example here is the pair
stacked on dim 1 (N x 2 x C x H x W, H and W multiples of 8), and the output is the final
flow, ``{"flow": N x 2 x H x W}`` in pixels (a nest of one leaf: judged against the base's flow
by cosine and relative error, the per-leaf readouts say so). The module paths of the flow
model are under ``model.`` (``model.feature_encoder.convnormrelu.0``).
"""
from __future__ import annotations

import torch
from torch import nn

FLOW_SIDE = 224  # the default input's height and width (a multiple of 8; RAFT trains on larger crops)


class ImagePairs(nn.Module):
    """``model(image1, image2, num_flow_updates=updates)`` on a batch of stacked pairs; its last flow."""

    def __init__(self, model: nn.Module, updates: int = 12):
        super().__init__()
        self.model = model
        self.updates = int(updates)

    def forward(self, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        flows = self.model(pairs[:, 0], pairs[:, 1], num_flow_updates=self.updates)
        return {"flow": flows[-1]}


def torchvision_flow(name: str, num_flow_updates: int = 12, **kwargs) -> ImagePairs:
    """torchvision's optical-flow model ``name`` (``raft_small``, ``raft_large``; ``weights=None``
    unless kwargs say) taking stacked pairs, refining ``num_flow_updates`` times."""
    import torchvision

    return ImagePairs(torchvision.models.get_model(name, **{"weights": None, **kwargs}), num_flow_updates)


__all__ = ["ImagePairs", "torchvision_flow", "FLOW_SIDE"]
