"""The default container is a chain of blocks, never branches on one input (deeplabv3's ASPP:
a ModuleList of parallel convolutions whose outputs are concatenated, the heaviest container of
that model, whose "blocks" the zoo's cut broke)."""
import pytest
import torch
from torch import nn

from core.errors import PlanError
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


class TokenBlock(nn.Module):
    """An MViT-like block on tokens (N, H*W, C): takes ``(x, thw)`` and returns ``(x, thw)``; ``thw`` is
    ``(h, w, depth)``, and the depth it is given scales its residual (so a wrong tail changes the output)."""

    def __init__(self, pool: bool = False):
        super().__init__()
        self.pool = pool
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x, thw):
        h, w, depth = thw
        if self.pool:  # halves the grid, as MViT's pooling blocks do, and says so in the thw it returns
            g = x.transpose(1, 2).reshape(x.shape[0], 8, h, w)
            x, h, w = nn.functional.avg_pool2d(g, 2).flatten(2).transpose(1, 2), h // 2, w // 2
        return x + self.mlp(x) / depth, (h, w, depth + 1)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.blocks = nn.ModuleList([TokenBlock(), TokenBlock(), TokenBlock(pool=True), TokenBlock(), TokenBlock()])
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        thw = (x.shape[2], x.shape[3], 1)
        x = x.flatten(2).transpose(1, 2)
        for b in self.blocks:
            x, thw = b(x, thw)
        return self.head(x.mean(1))


def test_blocks_that_pass_a_tuple_along_are_cut_with_bridges_that_pass_it_on():
    """Issue 24: MViT's blocks take and return (x, thw). They are the default container; a cut's bridge
    returns its tensor with the tail the next block expects: what it was given where that is the same
    (an identity seam), else what the next block was given in the trace (here the depth, one more)."""
    from core.plan import ApplyContext, Plan, apply
    from core.surgery import Cut
    from core.surgery.blocks import is_bridge
    from tests.helpers.nest_models import register_nest, unregister_nest

    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    base = Tokens().eval()
    assert default_container(base, example=x) == "blocks"
    blocks = list_blocks(base, x, "blocks")
    assert [b.in_shape for b in blocks] == [(64, 8)] * 3 + [(16, 8)] * 2 and blocks[-1].out_shape == (16, 8)
    name = register_nest("tokens_test", lambda: base)
    try:
        ctx = ApplyContext(name, calib_size=16)
        cut = apply(Plan(name, (Cut(blocks=("blocks.3",), bridge="identity"),)), base, ctx=ctx)
        bridge = [m for m in cut.blocks if is_bridge(m)]
        assert len(bridge) == 1 and bridge[0].carry == ((4, 4, 5),) and not bridge[0].carry_through
        # by hand: blocks 0-2, then block 4 given the depth it had in the base (5), not 4
        with torch.no_grad():
            t, thw = base.stem(x), None
            thw, t = (t.shape[2], t.shape[3], 1), t.flatten(2).transpose(1, 2)
            for b in base.blocks[:3]:
                t, thw = b(t, thw)
            t, _ = base.blocks[4](t, (4, 4, 5))
            want = base.head(t.mean(1))
            torch.testing.assert_close(cut(x), want)
        fitted = apply(Plan(name, (Cut(blocks=("blocks.1", "blocks.4"), bridge="lstsq"),)), base, ctx=ctx)
        assert fitted(x).shape == (4, 10) and sum(map(is_bridge, fitted.blocks)) == 2
        with pytest.raises(PlanError, match="64 tokens -> 16 tokens"):  # the pooling block: 64 tokens -> 16, refused
            apply(Plan(name, (Cut(blocks=("blocks.2",)),)), base, ctx=ctx)
    finally:
        unregister_nest(name)
