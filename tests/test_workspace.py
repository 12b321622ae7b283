import pytest
import torch

from core.errors import PlanError
from core.plan import Plan
from core.prune import LayerOverride, Prune
from core.workspace import Workspace


@pytest.fixture(scope="module")
def ws():
    return Workspace("digits_mlp", "cpu", quick_size=128, latency_time=0.02)


def test_undo_redo_move_along_the_history(ws):
    base_acc = ws.metrics().accuracy
    ws.add_step(Prune(sparsity=0.9))
    pruned = ws.metrics()
    assert pruned.sparsity > 0.85 and pruned.accuracy != base_acc
    ws.undo()
    assert ws.plan.steps == () and ws.metrics().accuracy == base_acc
    ws.redo()
    assert ws.metrics().accuracy == pruned.accuracy
    ws.reset()
    assert ws.plan.steps == () and ws.can_undo


def test_a_failing_step_keeps_the_current_plan(ws):
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.3),)))
    before = ws.plan
    with pytest.raises(PlanError):
        ws.add_step(Prune(layers=(LayerOverride("nope", sparsity=0.1),)))
    assert ws.plan == before
    assert ws.metrics().sparsity == pytest.approx(0.3, abs=0.01)


def test_every_evaluated_plan_is_logged(ws):
    n = len(ws.log)
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.42),)))
    ws.metrics()
    assert len(ws.log) == n + 1 and ws.log[-1].plan == ws.plan


def test_base_is_never_pruned(ws):
    snap = [p.clone() for p in ws.base.parameters()]
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.8),)))
    _ = ws.model
    assert all(torch.equal(a, b) for a, b in zip(snap, ws.base.parameters()))


def test_plan_for_another_model_is_refused(ws):
    with pytest.raises(ValueError, match="for model 'digits_cnn'"):
        ws.set_plan(Plan("digits_cnn"))


def test_forget_latency_times_the_current_model_and_its_base_again():
    from core.prune import Prune

    ws = Workspace("digits_mlp")
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5))
    first = ws.metrics("quick", latency=True)
    assert first.latency is not None and first.base_latency is not None
    ws.forget_latency()
    assert ws.metrics("quick", latency=False).latency is None  # nothing cached to reuse
    again = ws.metrics("quick", latency=True)
    assert again.latency is not None and again.latency is not first.latency
    assert again.base_latency is not first.base_latency
    assert again.accuracy == first.accuracy  # only the timing is new


def test_edits_of_one_control_are_one_entry_only_within_the_adjustment_window(ws, monkeypatch):
    import core.workspace.plans as plans

    now = [0.0]
    ws.reset()
    n = len(ws.history)
    monkeypatch.setattr(plans, "_clock", lambda: now[0])
    for s in (0.1, 0.2):
        ws.set_plan(Plan(ws.name, (Prune(sparsity=s),)), adjust="global")
        now[0] += plans.ADJUST_SECONDS / 2
    assert len(ws.history) == n + 1 and ws.plan.steps[0].sparsity == 0.2  # one adjustment
    now[0] += plans.ADJUST_SECONDS
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.3),)), adjust="global")
    assert len(ws.history) == n + 2  # a pause longer than the window starts a new entry
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.4),)), adjust="other")
    assert len(ws.history) == n + 3  # another control is another adjustment
