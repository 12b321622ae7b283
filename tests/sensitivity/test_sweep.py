"""Sensitivity sweeps: each point equals the plan with only that override, amount 0
changes nothing, the prefix cache is exact, cancel leaves a valid partial result, shards
add up, and criteria curves equal global prune steps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import PrunescopeError
from core.prune import LayerOverride, Prune
from core.sensitivity.prefix import PrefixCache
from core.workspace import Workspace

FIGS = ("accuracy", "loss", "agreement", "output_cosine")


def _plan_point(ws, criterion, granularity, layer, amount):
    step = Prune(criterion=criterion, granularity=granularity, layers=(LayerOverride(layer, sparsity=amount),))
    return ws.evaluate_plan(ws.plan.then(step), latency=False)


@pytest.mark.slow
@pytest.mark.parametrize("model,criterion,granularity", [
    ("digits_resnet", "l1", "weight"), ("digits_resnet", "taylor", "channel"), ("digits_vit", "l1", "head"),
    ("digits_mlp", "wanda", "neuron"), ("digits_cnn", "lamp", "weight")])
def test_each_point_equals_the_plan_with_only_that_override(model, criterion, granularity):
    ws = Workspace(model, "cpu")
    if model == "digits_resnet":  # a step first: the sweep is of the current plan's model
        ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.3))
    s = ws.sensitivity(criterion, granularity, (0.25, 0.7))
    assert s.complete and s.layers and s.plan_steps == len(ws.plan.steps)
    layers = list(s.layers)
    for layer in [layers[0], layers[len(layers) // 2], layers[-1]]:
        for p in s.layers[layer]:
            m = _plan_point(ws, criterion, granularity, layer, p["amount"])
            for k in FIGS:
                assert p[k] == pytest.approx(getattr(m, k), abs=1e-6), (layer, p["amount"], k)
            assert p["per_class_accuracy"] == pytest.approx(m.per_class_accuracy, abs=1e-9)
            assert (p["macs"], p["params"]) == (m.macs, m.nonzero_params)
    src = ws.metrics(latency=False)
    assert s.source["accuracy"] == src.accuracy and s.source["macs"] == src.macs


def test_a_layer_pruned_at_zero_changes_nothing():
    ws = Workspace("digits_resnet", "cpu")
    s = ws.sensitivity("l1", "channel", (0.0,))
    for layer, (p,) in s.layers.items():
        assert p["pruned"] == 0, layer
        for k in FIGS + ("macs", "params", "per_class_accuracy"):
            assert p[k] == s.source[k], (layer, k)
    assert s.source["agreement"] == 1.0


def test_larger_amounts_remove_more_and_cost_less():
    ws = Workspace("digits_cnn", "cpu")
    s = ws.sensitivity("l1", "channel", (0.2, 0.5, 0.8))
    for pts in s.layers.values():
        assert [p["pruned"] for p in pts] == sorted(p["pruned"] for p in pts) and pts[-1]["pruned"] > 0
        assert pts[-1]["macs"] < pts[0]["macs"] < s.source["macs"]


class _Inplace(nn.Module):
    """ReLU(inplace=True) after recorded outputs, a shared module called twice, a residual."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

    def forward(self, x):
        h = self.act(self.a(x))
        h = self.act(self.b(h)) + h
        return self.head(self.act(self.c(h)))


def test_the_prefix_cache_is_exact_and_survives_in_place_operations():
    torch.manual_seed(0)
    model = _Inplace().eval()
    x = torch.randn(32, 1, 8, 8)
    pc = PrefixCache(model, x, ["a", "b", "c", "head.1"])
    with torch.inference_mode():
        full = model(x)
    for layer in ["a", "b", "c", "head.1"]:
        for _ in range(2):  # a second run sees the same records
            assert torch.equal(pc.run(model, [layer]), full), layer
    # an edited copy: only what runs after the edit differs
    edited = __import__("copy").deepcopy(model)
    with torch.no_grad():
        edited.c.weight.mul_(0.5)
    with torch.inference_mode():
        want = edited(x)
    assert torch.equal(pc.run(edited, ["c"]), want)
    assert "a" in pc.outputs and "act" not in pc.outputs  # the shared ReLU is never skipped
    assert "a" not in pc._direct  # the in-place ReLU modifies what a returns: it is handed back as a copy


class _Two(nn.Module):
    """Two linear layers. ``mutate``: ``a``'s output is modified in place (a late surprise);
    ``early``: ``a``'s output is returned beside the logits (a skipped module's output is an output)."""

    def __init__(self, early: bool = False):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)
        self.mutate, self.early = False, early

    def forward(self, x):
        h = self.a(x)
        if self.mutate:
            h.mul_(2.0)
        return (h, self.b(h)) if self.early else self.b(h)


def test_records_nothing_modifies_are_handed_back_without_a_copy_and_dropped_if_one_ever_is():
    torch.manual_seed(0)
    model = _Two().eval()
    x = torch.randn(16, 8)
    pc = PrefixCache(model, x, ["a", "b"])
    with torch.inference_mode():
        full = model(x)
    for _ in range(3):
        assert torch.equal(pc.run(model, ["b"]), full)
    assert pc._direct == {"a"}  # no run modified it: the record itself is handed back
    model.mutate = True  # the next run modifies the record in place: that run is right, the record is dropped
    with torch.inference_mode():
        want = model(x)
    assert torch.equal(pc.run(model, ["b"]), want) and "a" not in pc.outputs and not pc._direct
    assert torch.equal(pc.run(model, ["b"]), want)  # (a whole forward now)
    model.mutate = False
    assert torch.equal(pc.run(model, ["b"]), full)


def test_an_output_that_is_a_record_is_a_copy_the_caller_may_modify():
    torch.manual_seed(0)
    model = _Two(early=True).eval()
    x = torch.randn(16, 8)
    pc = PrefixCache(model, x, ["a", "b"])
    with torch.inference_mode():
        h, logits = model(x)
    for _ in range(3):
        got_h, got_logits = pc.run(model, ["b"])
        assert torch.equal(got_h, h) and torch.equal(got_logits, logits)
        with torch.inference_mode():
            got_h.mul_(0.0)  # the caller's own copy
    assert pc._direct == {"a"} and torch.equal(pc.outputs["a"], h)


@pytest.mark.slow
def test_cancel_leaves_a_valid_partial_result():
    ws = Workspace("digits_resnet", "cpu")
    seen = []
    part = ws.sensitivity("l1", "weight", (0.3, 0.6), progress=lambda d, t, label: seen.append((d, t, label)),
                       should_stop=lambda: len(seen) > 3)
    assert not part.complete and 1 <= len(part.layers) < 11
    assert seen[0][0] == 0 and "unpruned" in seen[0][2] and "layer 1 of 11" in seen[1][2]
    full = ws.sensitivity("l1", "weight", (0.3, 0.6))
    assert full.complete and len(full.layers) == 11
    for layer, pts in part.layers.items():
        assert pts == full.layers[layer]
    assert ws.sensitivity("l1", "weight", (0.3, 0.6)) is full  # a finished sweep is kept per plan


def test_shards_add_up_to_the_whole_subset():
    ws = Workspace("digits_cnn", "cpu")
    one = ws.sensitivity("l1", "channel", (0.5,), "full")
    three = ws.sensitivity("l1", "channel", (0.5,), "full", shards=3)
    assert three.n == one.n == len(ws.evalset.y)
    for layer in one.layers:
        a, b = one.layers[layer][0], three.layers[layer][0]
        assert a["accuracy"] == b["accuracy"] and a["per_class_accuracy"] == b["per_class_accuracy"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_criteria_curves_equal_global_prune_steps():
    ws = Workspace("digits_mlp", "cpu")
    c = ws.criteria_curves(["l1", "random", "wanda"], "weight", (0.3, 0.8))
    assert list(c.curves) == ["l1", "random", "wanda"]
    for crit, pts in c.curves.items():
        for p in pts:
            m = ws.evaluate_plan(ws.plan.then(Prune(criterion=crit, granularity="weight", sparsity=p["amount"])),
                                 latency=False)
            assert p["accuracy"] == pytest.approx(m.accuracy, abs=1e-9) and p["params"] == m.nonzero_params


@pytest.mark.parametrize("kwargs,match", [
    (dict(amounts=(0.5, 1.5)), "amounts must be"),
    (dict(amounts=()), "amounts must be"),
    (dict(granularity="block"), "granularity must be one of"),
    (dict(criterion="nope"), "nope"),
    (dict(layers=["nope"]), "not prunable"),
    (dict(shards=0), "shards must be"),
    (dict(subset="half"), "subset must be"),
])
def test_bad_sweep_arguments_say_what_is_accepted(kwargs, match):
    ws = Workspace("digits_mlp", "cpu")
    args = dict(criterion="l1", granularity="weight", amounts=(0.5,))
    args.update(kwargs)
    with pytest.raises(PrunescopeError, match=match):
        ws.sensitivity(**args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_sweep_on_the_gpu_equals_the_plan_evaluated_there():
    ws = Workspace("digits_cnn", "cuda")
    s = ws.sensitivity("l1", "channel", (0.3, 0.6))
    assert s.complete and ws.model.features[0][0].weight.is_cuda
    for layer, pts in s.layers.items():
        for p in pts:
            m = _plan_point(ws, "l1", "channel", layer, p["amount"])
            assert p["accuracy"] == pytest.approx(m.accuracy, abs=1e-6) and p["macs"] == m.macs
