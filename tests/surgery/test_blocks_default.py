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


class PairBlock(nn.Module):
    """An MViT-like block: takes and returns ``(x, thw)``."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x, thw):
        return x + self.mlp(x), thw


class Pairs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.blocks = nn.ModuleList([PairBlock() for _ in range(3)])

    def forward(self, x):
        x, thw = self.stem(x), x.shape[-2:]
        for b in self.blocks:
            x, thw = b(x, thw)
        return x.mean((2, 3))


def test_blocks_that_pass_a_tuple_along_are_not_the_default_container():
    """Issue 24: MViT's blocks take and return (x, thw); its default container was them and the cut failed."""
    x = torch.randn(2, 3, 16, 16)
    c = default_container(Pairs().eval(), example=x)
    assert c != "blocks" and c.startswith("blocks.") and c.endswith(".mlp")  # the heaviest chain of single tensors
    assert len(list_blocks(Pairs().eval(), x, c)) == 3
