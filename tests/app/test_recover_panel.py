"""The Recover panel: fine-tuning after a channel prune is a plan step, the metrics show
the recovered model at once, with before / after figures (AppTest)."""
from __future__ import annotations

import pytest

from core.prune import Prune
from core.recover import Finetune
from tests.helpers.app import finish_job, metric, new_app, workspace
from tests.helpers.app import ok as _ok


def _pct(text: str) -> float:
    return float(text.rstrip("%"))


def test_fine_tune_after_a_channel_prune_recovers_and_shows_before_and_after():
    at = new_app("digits_cnn")
    ws = workspace(at)
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    at.run()
    hurt = _pct(metric(at, "Accuracy"))
    at.number_input(key="prune_ft_steps").set_value(80).run()
    at.button(key="prune_ft_start").click().run()
    finish_job(at, "prune_ft_job")
    _ok(at)
    step = ws.plan.steps[-1]
    assert isinstance(step, Finetune) and step.steps == 80 and step.loss == "both"
    assert _pct(metric(at, "Accuracy")) > hurt + 30  # drawn after the training, in the same click
    assert any(s.value.startswith("Fine-tuning: trained ") for s in at.success)
    assert any(m.value.startswith("**Last fine-tune**") for m in at.markdown)
    at.button(key="prune_undo").click().run()  # one undo takes the fine-tune away
    _ok(at)
    assert not isinstance(ws.plan.steps[-1], Finetune)


def test_a_model_without_labels_offers_distillation_only(fidelity_mlp):
    at = new_app(fidelity_mlp)
    _ok(at)
    assert at.selectbox(key="prune_ft_loss").options == ["distillation from the base"]


def test_cancel_keeps_the_steps_done_as_a_shorter_step():
    import time

    at = new_app("digits_cnn")
    ws = workspace(at)
    at.number_input(key="prune_ft_steps").set_value(5000).run()
    at.button(key="prune_ft_start").click().run()
    job = at.session_state["prune_ft_job"]
    deadline = time.time() + 120
    while job.inner[0] < 3 and time.time() < deadline:
        time.sleep(0.05)
    at.button(key="prune_ft_job_cancel").click().run()
    finish_job(at, "prune_ft_job")
    _ok(at)
    step = ws.plan.steps[-1]
    assert isinstance(step, Finetune) and 3 <= step.steps < 5000 and step.horizon == 5000
    assert any(s.value.startswith(f"Stopped after {step.steps} of 5000 steps") for s in at.success)


def test_quantize_int8_is_a_plan_step_and_the_metrics_show_the_int8_model():
    from core.recover import Quantize

    at = new_app("digits_cnn")
    ws = workspace(at)
    size0 = metric(at, "Size")
    at.button(key="prune_quantize").click().run()
    _ok(at)
    assert isinstance(ws.plan.steps[-1], Quantize)
    assert metric(at, "Size") != size0 and ws.metrics("quick", latency=False).size_bytes < 100_000
    assert any(s.value.startswith("Quantised: static int8 (onnxruntime)") for s in at.success)
    assert any("int8 model run by onnxruntime" in c.value for c in at.caption)
    assert at.button(key="prune_quantize").disabled


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits_cnn", "digits_vit"])
def test_every_page_opens_on_a_quantised_plan(model):
    from core.recover import Quantize

    at = new_app(model)
    workspace(at).add_step(Quantize())
    for page in ["views/prune.py", "views/model.py", "views/surgery.py", "views/export.py", "views/history.py"]:
        at.switch_page(page).run()
        _ok(at)
    at.switch_page("views/prune.py").run()
    at.selectbox(key="prune_granularity").set_value("channel").run()
    _ok(at)


def test_gradual_pruning_adds_prune_and_fine_tune_steps_in_the_background():
    at = new_app("digits_cnn")
    ws = workspace(at)
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.number_input(key="prune_ft_steps").set_value(20).run()
    at.slider(key="gradual_target").set_value(0.5).run()
    at.number_input(key="gradual_k").set_value(2).run()
    at.button(key="gradual_start").click().run()
    finish_job(at, "prune_ft_job")
    _ok(at)
    kinds = [type(s).__name__ for s in ws.plan.steps]
    assert kinds == ["Prune", "Finetune", "Prune", "Finetune"], kinds
    assert ws.plan.steps[0].round_to == 8
    assert any(s.value.startswith("Gradual pruning: added 4 steps") for s in at.success)
    at.button(key="prune_undo").click().run()
    assert ws.plan.steps == ()


def test_a_quantised_plan_does_not_claim_removed_parameters():
    from core.recover import Quantize

    at = new_app("digits_cnn")
    workspace(at).add_step(Quantize())
    at.run()
    _ok(at)
    assert not any("parameters removed: " in c.value for c in at.caption)


def test_training_progress_says_the_time_elapsed_and_an_estimate_of_the_time_left():
    import time

    from app.jobs import StepsJob
    from core.recover import Heal

    job = object.__new__(StepsJob)  # its fields only: no thread
    job.steps, job.label, job.index, job.inner = [Heal(steps=100)], "Healing", 0, (0, 100)
    job.loss, job.waiting = 0.5, False
    job.started, job.origin = time.monotonic() - 30, None
    assert "left" not in job.text() and "30 s elapsed" in job.text()
    job.inner = (10, 100)
    job.text()  # the pace is measured from the first step seen done
    job.origin = (time.monotonic() - 10, 0.1)
    job.inner = (20, 100)  # 0.1 of the work in 10 s: 0.8 to go
    assert job.text().endswith("· 30 s elapsed · about 80 s left")
