"""Finetune: masks and removed units kept, a cancelled run equals the shorter step,
distillation without labels, recipes replay to the same weights."""
from __future__ import annotations

import pytest
import torch

from core.errors import PlanError
from core.io.export import state_dict_hash
from core.plan import ApplyContext, Plan, apply
from core.prune import Prune
from core.recover import Finetune
from core.recover import training as ft_module


@pytest.fixture(autouse=True)
def fresh_memo():
    ft_module._MEMO.clear()
    yield
    ft_module._MEMO.clear()


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_keeps_pruned_weights_at_zero_and_changes_the_rest():
    plan = Plan("digits_mlp").then(Prune(criterion="l1", granularity="weight", sparsity=0.6))
    pruned = apply(plan)
    tuned = apply(plan.then(Finetune(steps=20, lr=1e-2)))
    before, after = _weights(pruned), _weights(tuned)
    changed = 0
    for k, w in before.items():
        if k.endswith("weight") and w.dim() > 1:
            assert torch.all(after[k][w == 0] == 0), f"{k}: a pruned weight came back"
            changed += int((after[k] != w).sum())
    assert changed > 0


def test_finetune_keeps_removed_units_removed():
    plan = Plan("digits_cnn").then(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    pruned = apply(plan)
    tuned = apply(plan.then(Finetune(steps=5)))
    assert {k: tuple(v.shape) for k, v in pruned.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in tuned.state_dict().items()}


def test_finetune_recovers_accuracy_after_channel_pruning():
    from core.workspace import Workspace

    ws = Workspace("digits_cnn")
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    hurt = ws.metrics("quick", latency=False).accuracy
    ws.add_step(Finetune(steps=100, lr=2e-3, loss="both"))
    assert ws.metrics("quick", latency=False).accuracy > hurt + 0.3
    assert ws.reports[-1].info["steps_run"] == 100


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_a_run_stopped_after_k_steps_is_the_step_with_k_steps(schedule):
    ctx = ApplyContext("digits_mlp")
    model = apply(Plan("digits_mlp"), ctx=ctx)
    step = Finetune(steps=12, schedule=schedule)
    calls = []
    stopped, info = step.run(model, ctx, should_stop=lambda: len(calls) >= 5,
                             progress=lambda d, n, loss: calls.append(d))
    assert info["steps_run"] == 5 and info["stopped"]
    ft_module._MEMO.clear()  # replay from scratch
    short = Finetune(steps=5, horizon=12, schedule=schedule)
    replayed, _ = short.run(model, ctx)
    assert state_dict_hash(stopped) == state_dict_hash(replayed)


def test_distillation_works_without_labels_on_a_fidelity_model(fidelity_mlp):
    plan = Plan(fidelity_mlp).then(Prune(criterion="l1", granularity="neuron", sparsity=0.5))
    with pytest.raises(PlanError, match="no labels; use loss='distill'"):
        apply(plan.then(Finetune(steps=2, loss="labels")))
    from core.plan import apply_with_reports

    _, reports = apply_with_reports(plan.then(Finetune(steps=30, lr=1e-2, loss="distill")))
    info = reports[-1].info
    assert info["steps_run"] == 30 and info["losses"][-1] < info["losses"][0]


def test_train_last_and_adapters_touch_only_their_parameters():
    from core.errors import ModelError
    from core.recover import trainable_parameters
    from core.sources.bases import load_base

    model = load_base("digits_resnet")
    last = trainable_parameters(model, "last", 1, "digits_resnet")
    assert any(n.startswith("layers.3.") for n in last) and not any(n.startswith("layers.2.") for n in last)
    assert any(not n.startswith("layers.") for n in last)  # the head after the container
    with pytest.raises(ModelError, match="no trainable adapters"):
        trainable_parameters(model, "adapters")


def test_a_recipe_with_prune_and_finetune_replays_to_the_same_weights():
    plan = (Plan("digits_cnn").then(Prune(criterion="taylor", granularity="channel", sparsity=0.3))
            .then(Finetune(steps=10, loss="both", threads=torch.get_num_threads())))
    first = state_dict_hash(apply(plan))
    ft_module._MEMO.clear()
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert state_dict_hash(apply(again)) == first
