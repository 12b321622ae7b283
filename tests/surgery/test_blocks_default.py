"""The default container is a chain of blocks, never branches on one input (deeplabv3's ASPP:
a ModuleList of parallel convolutions whose outputs are concatenated, the heaviest container of
that model, whose "blocks" the zoo's cut broke)."""
import torch
from torch import nn

from core.surgery import default_container, list_blocks


class Branches(nn.Module):
    """An ASPP-like head: heavy parallel branches on one input, concatenated, then a chain."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.convs = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=d, dilation=d) for d in (1, 2, 3)])
        self.head = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.cat([c(x) for c in self.convs], 1))


class Chain(nn.Module):
    """The same convolutions run one after another in a ModuleList (and an Identity between)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.convs = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.Identity(), nn.Conv2d(8, 8, 3, padding=1),
                                    nn.Conv2d(8, 8, 3, padding=1)])

    def forward(self, x):
        x = self.stem(x)
        for c in self.convs:
            x = c(x)
        return x


def test_parallel_branches_are_not_the_default_container_and_a_chain_is():
    x = torch.randn(2, 3, 16, 16)
    assert default_container(Branches().eval(), example=x) == "stem"
    blocks = list_blocks(Branches().eval(), x, "stem")
    assert [b.out_shape for b in blocks] == [(8, 16, 16)] * 4
    assert default_container(Chain().eval(), example=x) == "convs"  # an Identity passes its input on: still a chain
