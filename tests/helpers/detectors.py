"""A small detector built in the tests: torchvision's output format (a list of dicts with boxes,
labels and scores per image), always the same boxes (those of ``tests.helpers.data.box_folder``
at 24 x 24), scored by a conv and a linear layer from the image (so pruning moves the scores)."""
from __future__ import annotations

import torch
from torch import nn

BOXES = torch.tensor([[2.0, 2.0, 10.0, 10.0], [12.0, 12.0, 20.0, 20.0]])  # box_folder's, images resized to 24 px
LABELS = torch.tensor([1, 2])


class FixedBoxes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        s = torch.sigmoid(self.head(self.conv(x).relu().mean((2, 3)))) * 0.5 + 0.5  # scores in (0.5, 1)
        return [{"boxes": BOXES.to(x.device), "labels": LABELS.to(x.device), "scores": s[i]} for i in range(len(x))]


def fixed_boxes() -> FixedBoxes:
    torch.manual_seed(0)
    return FixedBoxes()
