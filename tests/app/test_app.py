import pytest

from tests.helpers.app import metric, new_app, workspace
from tests.helpers.models import DEMO_MODELS

PAGES = ["views/model.py", "views/prune.py", "views/surgery.py", "views/export.py", "views/history.py"]


@pytest.mark.slow
@pytest.mark.parametrize("model", DEMO_MODELS)
def test_every_page_renders_on_each_demo_model(model):
    at = new_app(model)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])


def test_prune_is_the_default_page_and_shows_metrics():
    at = new_app()
    assert at.session_state["model_name"] == "digits_cnn"
    assert metric(at, "Sparsity") == "0.0%"
    assert metric(at, "Accuracy").endswith("%")


def test_moving_the_global_control_changes_accuracy_and_sparsity():
    at = new_app("digits_mlp")
    acc0, sp0 = metric(at, "Accuracy"), metric(at, "Sparsity")
    at.slider(key="global_sparsity").set_value(0.95).run()
    assert not at.exception
    assert metric(at, "Sparsity") != sp0 and metric(at, "Accuracy") != acc0
    assert metric(at, "Sparsity").startswith("95")


def test_threshold_mode_shows_the_sparsity_it_gives():
    at = new_app("digits_mlp")
    at.radio(key="global_mode").set_value("threshold").run()
    at.slider(key="global_threshold").set_value(0.05).run()
    assert not at.exception
    step = workspace(at).plan.steps[-1]
    assert step.threshold == pytest.approx(0.05, abs=1e-3)
    assert metric(at, "Sparsity") != "0.0%"


def test_per_layer_override_changes_only_that_layer():
    import torch

    at = new_app("digits_mlp")
    at.selectbox(key="layer").set_value("layers.3").run()
    at.slider(key="ov_digits_mlp_layers.3").set_value(0.8).run()
    assert not at.exception
    ws = workspace(at)
    mods = dict(ws.model.named_modules())
    zero = {n: float((mods[n].weight == 0).float().mean()) for n in ("layers.1", "layers.3", "layers.5")}
    assert zero["layers.3"] == pytest.approx(0.8, abs=0.01)
    assert zero["layers.1"] == 0 and zero["layers.5"] == 0
    # clearing the override removes the step (nothing else was set)
    at.button(key="clear_ov_digits_mlp_layers.3").click().run()
    assert workspace(at).plan.steps == ()
    assert torch.equal(mods["layers.1"].weight, dict(ws.base.named_modules())["layers.1"].weight)


def test_undo_and_redo_restore_the_previous_figures():
    at = new_app("digits_mlp")
    acc0 = metric(at, "Accuracy")
    at.slider(key="global_sparsity").set_value(0.95).run()
    acc1 = metric(at, "Accuracy")
    assert acc1 != acc0
    at.button(key="prune_undo").click().run()
    assert metric(at, "Accuracy") == acc0 and metric(at, "Sparsity") == "0.0%"
    assert at.slider(key="global_sparsity").value == 0.0
    at.button(key="prune_redo").click().run()
    assert metric(at, "Accuracy") == acc1
    assert at.slider(key="global_sparsity").value == pytest.approx(0.95)


def test_two_sessions_do_not_see_each_others_plans():
    a = new_app("digits_mlp")
    b = new_app("digits_mlp")
    a.slider(key="global_sparsity").set_value(0.7).run()
    b.run()
    assert workspace(a).plan.steps and not workspace(b).plan.steps
    assert metric(b, "Sparsity") == "0.0%"
    assert workspace(a).base is workspace(b).base  # shared pristine base, never pruned
    assert all(float((p == 0).float().mean()) < 0.5 for p in workspace(b).base.parameters() if p.dim() > 1)


def test_full_set_evaluation_shows_a_table():
    at = new_app("digits_mlp")
    at.button(key="prune_full").click().run()
    assert not at.exception
    assert len(at.dataframe) >= 1


def test_removing_a_step_from_the_plan_list():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ws = workspace(at)
    key = f"prune_rm_0_{ws.plan.key()}"
    at.button(key=key).click().run()
    assert workspace(at).plan.steps == ()


def test_history_page_restores_a_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    at.slider(key="global_sparsity").set_value(0.9).run()
    at.switch_page("views/history.py").run()
    assert not at.exception
    sb = at.selectbox(key="restore_choice")
    target = next(o for o in sb.options if "50.0%" in o)
    sb.set_value(target)
    at.button(key="restore_btn").click().run()
    assert not at.exception
    assert workspace(at).plan.steps[-1].sparsity == 0.5


def test_a_bug_shows_an_error_box_with_its_traceback_and_keeps_the_plan(monkeypatch):
    from core.workspace import Workspace

    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    plan = workspace(at).plan

    def broken(self, plan, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Workspace, "set_plan", broken)  # remove_step calls it
    at.button(key=f"prune_rm_0_{plan.key()}").click().run()
    assert not at.exception
    assert any("Internal error (ZeroDivisionError: a bug)" in e.value for e in at.error)
    assert any("Traceback" in x.label for x in at.expander)
    assert workspace(at).plan == plan


def test_a_user_mistake_shows_its_message_without_a_traceback():
    at = new_app("digits_mlp")
    ws = workspace(at)
    from app.messages import error_message
    from core.errors import PlanError
    from core.prune import LayerOverride, Prune

    try:
        ws.add_step(Prune(layers=(LayerOverride("nope", sparsity=0.5),)))
    except PlanError as exc:
        msg, tb = error_message(exc)
    assert tb is None and msg.startswith("step 1 (prune weight by l1") and "not prunable layers" in msg
    assert ws.plan.steps == ()
