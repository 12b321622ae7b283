"""Nothing one session or notebook does reaches another: the shared base cannot be
changed through a workspace, a re-registered name serves its new model, recipes that
train run only when allowed, and training replays record their thread count."""
from __future__ import annotations

import pytest
import torch

from core.errors import PrunescopeError
from core.plan import Plan
from core.recover import Heal
from core.sources.bases import load_base
from core.sources.models import register_factory
from core.surgery import Cut
from core.workspace import Workspace


def test_editing_the_model_of_an_empty_plan_does_not_touch_the_shared_base():
    a = Workspace("digits_mlp", "cpu", latency_time=0.01)
    b = Workspace("digits_mlp", "cpu", latency_time=0.01)
    before = {k: v.clone() for k, v in load_base("digits_mlp").state_dict().items()}
    with torch.no_grad():
        for p in a.model.parameters():  # a notebook zeroing "the model"
            p.zero_()
    for k, v in load_base("digits_mlp").state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p, q) for p, q in zip(b.model.parameters(), load_base("digits_mlp").parameters()))
    assert b.metrics(latency=False).accuracy > 0.9


def test_registering_a_name_again_serves_the_new_model(tmp_path):
    register_factory("demo_models.nets:DigitsMLP", weights=None, dataset="digits", input_shape=(1, 8, 8),
                     name="iso_user_model")
    first = load_base("iso_user_model")
    register_factory("demo_models.nets:DigitsCNN", weights=None, dataset="digits", input_shape=(1, 8, 8),
                     name="iso_user_model")
    second = load_base("iso_user_model")
    assert type(first).__name__ == "DigitsMLP" and type(second).__name__ == "DigitsCNN"
    from core.sources.bases import forget_base
    from core.sources.models import MODELS

    MODELS.unregister("iso_user_model")
    forget_base("iso_user_model")


def test_load_refuses_a_recipe_that_trains_unless_allowed(tmp_path):
    from core.io import export_model, load

    ws = Workspace("digits_cnn", "cpu", latency_time=0.01)
    ws.add_step(Cut(("features.1",), bridge="lstsq"))
    ws.add_step(Heal(steps=3, threads=1))
    out = tmp_path / "healed.safetensors"
    assert export_model(ws.model, ws.plan, "safetensors", out, ws.evalset.quick()[0][:8]).error is None
    with pytest.raises(PrunescopeError, match=r"its recipe trains \(step 2: heal adapters for 3 steps"):
        load(out)
    m = load(out, train=True)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ws.model.state_dict().values()))


def test_a_heal_records_and_uses_its_thread_count():
    plan = Plan("digits_cnn", (Cut(("features.1",), bridge="lstsq"), Heal(steps=2, threads=1)))
    again = Plan.from_json(plan.to_json())
    assert again.steps[1].threads == 1
    ws = Workspace("digits_cnn", "cpu", latency_time=0.01)
    n = torch.get_num_threads()
    ws.set_plan(plan)
    assert ws.reports[1].info["threads"] == 1 and torch.get_num_threads() == n  # restored after training
