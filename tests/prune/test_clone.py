"""clone_with: the copy a weight-level prune builds equals deepcopy's, shares nothing, and
falls back to deepcopy for anything it cannot copy safely."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core.prune.clone import _fast_ok, clone_with
from core.sources.models import build_model
from tests.helpers.models import DEMO_MODELS


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
        assert sa[k].data_ptr() != sb[k].data_ptr() or sa[k].numel() == 0, f"{k} is shared"
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    assert a.training == b.training


def _vision():
    tv = pytest.importorskip("torchvision")
    return [tv.models.resnet18(), tv.models.vit_b_16(image_size=32), tv.models.mobilenet_v3_small()]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_a_demo_takes_the_fast_path_and_equals_deepcopy(name):
    model = build_model(name).eval()
    assert _fast_ok(model)
    c = clone_with(model)
    _same(model, c)
    assert c is not model and all(a is not b for a, b in zip(model.modules(), c.modules()))


def test_torchvision_models_take_the_fast_path_and_compute_the_same():
    for model in _vision():
        model.eval()
        assert _fast_ok(model), type(model).__name__
        c = clone_with(model)
        _same(model, c)
        x = torch.randn(2, 3, 32, 32) if "VisionTransformer" in type(model).__name__ else torch.randn(2, 3, 64, 64)
        with torch.inference_mode():
            assert torch.equal(model(x), c(x))


def test_replaced_parameters_are_used_as_given_and_the_source_is_untouched():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = copy.deepcopy(model.state_dict())
    new = nn.Parameter(torch.zeros(4, 4))
    c = clone_with(model, {id(model[0].weight): new})
    assert c[0].weight is new and c[2].weight is not model[2].weight
    with torch.no_grad():
        c[2].weight.add_(1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shared_modules_and_tied_weights_stay_shared_in_the_copy():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    tied = nn.Module()
    tied.a, tied.b = nn.Linear(3, 3), nn.Linear(3, 3)
    tied.b.weight = tied.a.weight
    c, t = clone_with(model), clone_with(tied)
    assert c[0] is c[2] and c[0] is not lin
    assert t.b.weight is t.a.weight and t.a.weight is not tied.a.weight


def test_hooks_are_not_shared_and_adding_one_to_the_copy_leaves_the_source_alone():
    model = nn.Sequential(nn.Linear(2, 2))
    c = clone_with(model)
    c[0].register_forward_hook(lambda *a: None)
    assert not model[0]._forward_hooks


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.scale = torch.ones(2)  # a plain tensor attribute: deepcopy copies it, a shallow copy would share it

    def forward(self, x):
        return self.lin(x) * self.scale


def test_anything_it_cannot_copy_safely_goes_to_deepcopy():
    odd = _Holder()
    hooked = nn.Sequential(nn.Linear(2, 2))
    hooked[0].register_forward_hook(lambda *a: None)
    bound = nn.Linear(2, 2)
    bound.forward = bound.forward  # an instance attribute bound to the source
    for model in (odd, hooked, bound):
        assert not _fast_ok(model)
    c = clone_with(odd)
    assert c.scale is not odd.scale and torch.equal(c.scale, odd.scale)
    cb = clone_with(bound)
    assert cb.forward.__self__ is cb


def test_a_dropped_copy_is_freed_at_once_without_the_cyclic_collector():
    import gc
    import weakref

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    gc.disable()
    try:
        copy_ = clone_with(model, {id(model[0].weight): nn.Parameter(torch.zeros(16, 8))})
        refs = [weakref.ref(copy_), weakref.ref(copy_[0].weight), weakref.ref(copy_[2].weight)]
        del copy_
        assert [r() for r in refs] == [None, None, None]  # reference counting alone freed it: no cycle holds it
    finally:
        gc.enable()
