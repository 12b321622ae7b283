"""Prefix reuse in the live loop: the quick figures after a late-layer edit, run from the last
model's kept activations, equal a whole forward's."""
import copy

import pytest
import torch
from torchvision.models import ResNet, VisionTransformer
from torchvision.models.resnet import Bottleneck

from core.metrics import Evaluator
from core.prune import LayerOverride, Prune
from core.sensitivity.prefix import LivePrefix
from core.sources.datasets import DataSplits, EvalSet
from core.workspace import Workspace


def _override(layer: str, sparsity: float) -> Prune:
    return Prune(criterion="l1", granularity="weight", sparsity=0.2, layers=(LayerOverride(layer, sparsity=sparsity),))


def test_workspace_quick_figures_after_a_late_override_equal_a_whole_forward(monkeypatch):
    ws = Workspace("digits_resnet", "cpu", quick_size=64)
    monkeypatch.setattr(ws, "prefix_pays", lambda: True)  # a demo's quick forward is too fast to use it
    ws.set_plan(ws.plan.then(_override("head.2", 0.3)))
    ws.metrics("quick", latency=False)
    ws.replace_step(0, _override("head.2", 0.6))  # a per-layer override moved on the last layer
    m = ws.metrics("quick", latency=False)
    assert ws._live_prefix.skipped  # the move reused the prefix
    whole = ws.evaluator.evaluate(ws.model, "quick", latency=False)  # no forward given: model(x)
    assert m.accuracy == whole.accuracy and m.loss == pytest.approx(whole.loss, abs=1e-6)
    assert m.per_class_accuracy == whole.per_class_accuracy
    x, _ = ws.evalset.quick()
    with torch.inference_mode():
        ref = ws.model(x)
    again = LivePrefix()
    again.run(copy.deepcopy(ws.model), x)
    ws.replace_step(0, _override("head.2", 0.9))
    with torch.inference_mode():
        late = ws.model(x)
    torch.testing.assert_close(again.run(ws.model, x), late, atol=1e-5, rtol=0)
    assert again.skipped and not torch.equal(late, ref)


def test_measured_plans_run_through_the_live_prefix_and_equal_a_whole_forward(monkeypatch):
    """``evaluate_plan`` (autoplan's tries, the greedy's candidates) reuses the prefix as the live loop does."""
    from core.plan import apply

    ws = Workspace("digits_resnet", "cpu", quick_size=64)
    monkeypatch.setattr(ws, "prefix_pays", lambda: True)
    ws.evaluate_plan(ws.plan.then(_override("head.2", 0.3)), latency=False)
    plan = ws.plan.then(_override("head.2", 0.6))
    m = ws.evaluate_plan(plan, latency=False)
    assert ws._live_prefix.skipped  # the second plan differs in the last layer only
    whole = ws.evaluator.evaluate(apply(plan, ws.base, ctx=ws.ctx), "quick", latency=False)
    assert m.accuracy == whole.accuracy and m.loss == pytest.approx(whole.loss, abs=1e-6)
    assert m.per_class_accuracy == whole.per_class_accuracy

def _vit() -> torch.nn.Module:
    return VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                             num_classes=5)


def _resnet() -> torch.nn.Module:
    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)


@pytest.mark.parametrize("make,late,early", [
    (_resnet, "layer4.0.conv3", "layer1.0.conv1"),
    (_vit, "encoder.layers.encoder_layer_1.mlp.3", "conv_proj"),
])
def test_late_edit_of_a_torchvision_model_reuses_the_prefix_and_keeps_the_logits(make, late, early):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(6, 3, 16, 16)
    live = LivePrefix()
    with torch.inference_mode():
        torch.testing.assert_close(live.run(model, x), model(x), atol=0, rtol=0)
        edited = copy.deepcopy(model)
        w = dict(edited.named_modules())[late].weight
        w.mul_((torch.rand_like(w) > 0.5).float())  # half the late layer's weights zeroed
        out = live.run(edited, x)
        assert live.skipped and late not in live.skipped
        torch.testing.assert_close(out, edited(x), atol=1e-5, rtol=0)
        w = dict(edited.named_modules())[early].weight
        w.mul_(0.5)  # an early edit: nothing before it to reuse
        out = live.run(edited, x)
        torch.testing.assert_close(out, edited(x), atol=1e-5, rtol=0)


def test_a_budget_too_small_for_the_activations_runs_the_whole_forward():
    torch.manual_seed(0)
    model = _resnet().eval()
    x = torch.randn(4, 3, 16, 16)
    live = LivePrefix(budget_bytes=0)
    with torch.inference_mode():
        live.run(model, x)
        edited = copy.deepcopy(model)
        edited.fc.weight.mul_(0.5)
        out = live.run(edited, x)
        assert live.skipped == []
        torch.testing.assert_close(out, edited(x), atol=0, rtol=0)


def test_evaluator_figures_with_the_live_forward_equal_the_plain_ones():
    torch.manual_seed(0)
    model = _resnet().eval()
    x = torch.randn(40, 3, 16, 16)
    splits = DataSplits("tiny", x, torch.arange(40) % 5, x, torch.arange(40) % 5, [str(i) for i in range(5)])
    ev = Evaluator(EvalSet.from_splits(splits, "cpu", quick_size=40), model)
    live = LivePrefix()
    ev.evaluate(model, latency=False, forward=live.run)
    edited = copy.deepcopy(model)
    with torch.inference_mode():
        edited.layer4[0].conv3.weight.mul_(0.3)
    got = ev.evaluate(edited, latency=False, forward=live.run)
    assert live.skipped
    want = ev.evaluate(edited, latency=False)
    assert (got.accuracy, got.agreement, got.per_class_accuracy) == (want.accuracy, want.agreement,
                                                                     want.per_class_accuracy)
    assert got.loss == pytest.approx(want.loss, abs=1e-6)


def test_prefix_reuse_is_left_out_where_a_quick_forward_is_fast(monkeypatch):
    ws = Workspace("digits_mlp", "cpu", quick_size=64)
    monkeypatch.setattr(ws.evaluator, "expected_seconds", lambda subset="quick": 0.01)
    assert not ws.prefix_pays() and ws.quick_forward("quick") is None
    monkeypatch.setattr(ws.evaluator, "expected_seconds", lambda subset="quick": 5.0)
    assert ws.prefix_pays() and ws.quick_forward("quick") is not None
    assert ws.quick_forward("full") is None
