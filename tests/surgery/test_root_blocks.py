"""Blocks of a model without a container of blocks (the root's top-level children), and the
default container chosen by the MACs it covers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core import surgery as S
from core.errors import PlanError
from core.plan import ApplyContext, Plan, apply
from core.sources.models import MODELS, ModelSpec, register_model


class Tower(nn.Module):
    """No nn.Sequential / nn.ModuleList anywhere; a flatten before the classifier, a shared
    activation (called twice) and an auxiliary head that runs only in training."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.aux = nn.Linear(8 * 8 * 8, 10)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        if self.training:
            self.aux(x.flatten(1))
        x = self.pool(self.conv3(x))
        return self.fc(torch.flatten(x, 1))


class Branchy(nn.Module):
    """Big convolutions at the top level, one small Sequential (a googlenet-like branch)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(32, 2, 1), nn.ReLU())
        self.fc = nn.Linear(2 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.branch(self.b(self.a(x))).flatten(1))


class Heavy(nn.Module):
    """A Sequential holding almost every MAC (a VGG-like features block), a small head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 10), nn.ReLU(), nn.Linear(10, 10))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def tower():
    torch.manual_seed(0)
    register_model(ModelSpec(name="tower_test", factory=Tower, input_shape=(1, 8, 8), dataset="digits",
                             task="fidelity"), overwrite=True)
    yield "tower_test"
    MODELS.unregister("tower_test")


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_model_without_containers_lists_its_top_level_children_as_blocks():
    m = Tower().eval()
    blocks = S.list_blocks(m, _x())
    assert [b.name for b in blocks] == ["conv1", "act", "conv2", "conv3", "aux", "pool", "fc"]
    by = {b.name: b for b in blocks}
    assert by["conv2"].in_shape == by["conv2"].out_shape == (8, 8, 8) and by["conv2"].macs > 0
    assert by["conv3"].out_shape == (16, 4, 4)
    assert by["aux"].macs == 0 and by["act"].macs == 0  # not run in eval / run twice: pass-throughs
    assert by["fc"].in_shape == (16,)  # what the classifier saw after the model's own flatten
    assert S.default_container(m, example=_x()) == ""


def test_cutting_a_top_level_child_puts_its_bridge_in_that_attribute(tower):
    ctx = ApplyContext(tower)
    base = MODELS.get(tower).factory().eval()
    m = S.Cut(("conv2",)).build(base, ctx)[0]
    assert type(m) is Tower and isinstance(m.conv2, S.Bridge) and m.conv2.is_identity
    assert m.conv1 is not base.conv1 and torch.equal(m.conv1.weight, base.conv1.weight)  # a copy
    assert isinstance(base.conv2, nn.Conv2d)  # the input is not changed
    out = m(_x())
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    m2 = S.Cut(("conv3",)).build(base, ctx)[0]  # the shape changes: a fitted bridge
    assert isinstance(m2.conv3, S.Bridge) and m2.conv2.__class__ is not S.Bridge
    assert m2(_x()).shape == (4, 10)
    assert [b.name for b in S.list_blocks(m2, _x())] == ["conv1", "act", "conv2", "conv3", "aux", "pool", "fc"]


def test_a_cut_of_top_level_children_replays_from_a_plan(tower):
    plan = Plan(tower, (S.Cut(("conv2", "conv3")),))
    a, b = apply(plan), apply(plan)
    assert isinstance(a.conv2, S.Bridge) and isinstance(a.conv3, (S.Bridge, nn.Identity))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a(_x()).shape == (4, 10)


def test_pasting_between_top_level_children_is_refused_with_a_reason(tower):
    with pytest.raises(PlanError, match="cannot insert"):
        apply(Plan(tower, (S.Paste(block="conv2", at=3, into=""),)))


def test_default_container_is_the_one_covering_most_macs():
    assert S.default_container(Heavy(), example=_x()) == "features"  # not the head with more children
    assert S.default_container(Branchy(), example=_x()) == ""  # the branch covers a sliver of the MACs
    assert S.container_candidates(Branchy()) == ["branch", ""]
    assert S.default_container(Branchy()) == "branch"  # nothing to run it with: by shape alone


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


def test_a_plain_sequential_models_own_children_are_its_blocks():
    """Issue 22: the root was left out of the MACs comparison, so one inner conv-bn-relu
    block (Conv2d, BatchNorm2d, ReLU) became the default container."""
    m = nn.Sequential(_conv_block(1, 8), _conv_block(8, 8), nn.MaxPool2d(2), _conv_block(8, 16),
                      nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()
    assert S.default_container(m, example=_x()) == ""
    blocks = S.list_blocks(m, _x())
    assert [b.kind for b in blocks] == ["Sequential", "Sequential", "MaxPool2d", "Sequential", "Flatten", "Linear"]
    # nested Sequentials: the inner one holding nearly all the MACs has the finer blocks
    nested = nn.Sequential(nn.Sequential(_conv_block(1, 8), _conv_block(8, 8), _conv_block(8, 8), nn.Flatten()),
                           nn.Linear(8 * 8 * 8, 10)).eval()
    assert S.default_container(nested, example=_x()) == "0"


@pytest.mark.slow
def test_torchvision_inception_and_googlenet_get_a_block_view_covering_the_model():
    tv = pytest.importorskip("torchvision")
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    m = tv.models.get_model("inception_v3", weights=None, init_weights=False).eval()
    assert S.default_container(m, example=x) == ""
    blocks = S.list_blocks(m, x)
    names = [b.name for b in blocks]
    assert names[:3] == ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"] and "Mixed_6b" in names
    assert {b.name: b.macs for b in blocks}["AuxLogits"] == 0  # runs only in training
    g = tv.models.get_model("googlenet", weights=None, init_weights=False).eval()
    assert S.default_container(g, example=x[..., :224, :224]) == ""


class Detectorish(nn.Module):
    """A detector's layout: the root's children take lists and dicts (not one tensor), the backbone's
    body is torchvision's IntermediateLayerGetter (an nn.ModuleDict running its children in order and
    returning the feature maps it names) and a heavy head on proposals holds most of the MACs."""

    def __init__(self):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter

        trunk = nn.Sequential()
        for name, mod in [("stem", nn.Conv2d(1, 8, 3, padding=1)), ("a", _conv_block(8, 8)),
                          ("b", _conv_block(8, 8)), ("c", _conv_block(8, 16))]:
            trunk.add_module(name, mod)
        self.body = IntermediateLayerGetter(trunk, return_layers={"b": "low", "c": "high"})
        self.head = nn.Linear(16 * 8 * 8, 4096)
        self.out = nn.Linear(4096, 10)

    def prepare(self, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return torch.stack(images) if isinstance(images, list) else images

    def forward(self, images: list[torch.Tensor]):
        feats = self.body(self.prepare(images))
        return {"low": feats["low"].mean((1, 2, 3)), "scores": self.out(self.head(feats["high"].flatten(1)))}


def test_a_moduledict_body_is_a_container_and_a_detectors_root_never_is():
    """Issue 24: three torchvision detectors offered their root, whose ``rpn`` takes images and
    features, and the cut failed; an IntermediateLayerGetter was no container at all."""
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = Detectorish().eval()
    x = list(_x(2))
    assert "body" in S.container_candidates(m)
    assert S.default_container(m, example=x) == "body"
    blocks = S.list_blocks(m, x)
    assert [b.name for b in blocks] == ["body.stem", "body.a", "body.b", "body.c"]
    assert blocks[1].in_shape == blocks[1].out_shape == (8, 8, 8) and blocks[1].macs > 0
    register_model(ModelSpec(name="detectorish_test", factory=Detectorish, input_shape=(1, 8, 8),
                             dataset="digits", task="fidelity"), overwrite=True)
    try:
        base = Detectorish().eval()
        cut = S.Cut(("body.a",)).build(base, ApplyContext("detectorish_test"))[0]
        assert isinstance(cut.body["a"], S.Bridge) and list(cut.body.keys()) == ["stem", "a", "b", "c"]
        assert cut.body.return_layers == {"b": "low", "c": "high"}  # the dict's own forward still names them
        out = cut(x)
        assert set(out) == {"low", "scores"} and out["scores"].shape == (2, 10)
        assert isinstance(base.body["a"], nn.Sequential)  # the input is not changed
        assert set(S.heal_parameters(cut, "adapters+neighbours")) >= {"body.stem.weight", "body.b.0.weight"}
    finally:
        MODELS.unregister("detectorish_test")
