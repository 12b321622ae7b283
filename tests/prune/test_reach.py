"""A structured step whose groups reach only a small part of the model says so (issue 24: Swin's
channels reach its patch embedding alone), and a step on the demos does not."""
import torch
from torch import nn

from core.prune.structured.graph import Member, UnitGroup
from core.prune.structured.prune import _low_reach


def _group(name: str, n: int) -> UnitGroup:
    idx = torch.arange(n)
    return UnitGroup(name=name, granularity="channel", n_units=n, producers=(name,),
                     members=[Member(name, "out", idx, idx)], root=name, root_out=True)


def test_groups_reaching_a_small_share_of_the_parameters_say_why_and_what_else_to_try():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 512), nn.Linear(512, 10))
    smaller = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Flatten(), nn.Linear(6 * 30 * 30, 512), nn.Linear(512, 10))
    said = _low_reach(model, smaller, [_group("0", 8)], "channel")
    total = sum(p.numel() for p in model.parameters())
    assert said.startswith(f"removed {1 - sum(p.numel() for p in smaller.parameters()) / total:.1%} of the parameters")
    assert f"reach layers holding {224 / total:.1%} of them" in said and "try neuron" in said
    assert _low_reach(model, smaller, [_group("0", 8), _group("2", 512)], "channel") is None  # most is reached
