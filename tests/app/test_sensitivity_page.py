"""The Sensitivity page: a sweep in the background with progress and cancel, the heatmap,
curves and per-class views, criteria curves, and an automatic plan (AppTest)."""
from __future__ import annotations

import threading
import time

import pytest

import app.jobs as J
from core.prune import Prune
from core.sensitivity import Sensitivity
from tests.helpers.app import finish_job, new_app, ok, workspace

PAGE = "views/sensitivity.py"


def titles(at) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def sweep(at, key_model: str) -> None:
    at.button(key="sens_run").click().run()
    ok(at)
    finish_job(at, f"sens_job_{key_model}")
    ok(at)


def test_a_sweep_runs_in_the_background_and_draws_every_view():
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    ok(at)
    assert any("No sweep of the current plan" in i.value for i in at.info)
    at.selectbox(key="sens_gran").set_value("channel").run()
    at.multiselect(key="sens_amounts").set_value([0.2, 0.5, 0.8]).run()
    sweep(at, "digits_cnn")
    assert any(s.value.startswith("Sensitivity: 3 layers × 3 amounts") for s in at.success)
    t = titles(at)
    assert any("Accuracy drop when one layer is pruned alone" in x for x in t)
    assert any("Accuracy against the amount" in x for x in t)
    assert any("Per-class accuracy drop when" in x for x in t)
    ws = workspace(at)
    (s,) = [v for v in ws.sweeps.values() if hasattr(v, "drop")]
    assert s.granularity == "channel" and s.amounts == (0.2, 0.5, 0.8) and s.complete
    assert any("Most sensitive:" in c.value for c in at.caption)
    # the button is off while this sweep is kept; another plan needs its own sweep
    assert at.button(key="sens_run").disabled
    ws.add_step(Prune(sparsity=0.3))
    at.run()
    ok(at)
    assert any("No sweep of the current plan" in i.value for i in at.info)


@pytest.mark.slow
def test_cancel_keeps_the_layers_finished():
    at = new_app("digits_resnet")
    at.switch_page(PAGE).run()
    at.multiselect(key="sens_amounts").set_value([0.1, 0.3, 0.5, 0.7, 0.9]).run()
    at.button(key="sens_run").click().run()
    ok(at)
    job = at.session_state["sens_job_digits_resnet"]
    deadline = time.monotonic() + 120
    while job.done < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancelled = True  # what the Cancel button's callback does
    finish_job(at, "sens_job_digits_resnet")
    assert any("Sweep stopped:" in i.value for i in at.info), [i.value for i in at.info]
    assert any("Stopped early" in c.value for c in at.caption)
    assert any("Accuracy drop when one layer" in x for x in titles(at))
    assert not workspace(at).sweeps  # a stopped sweep is not kept as finished
    assert any("Run the sweep above for any target" in c.value for c in at.caption)
    assert [b.key for b in at.button if b.key == "sens_run_budget"]  # or a sweep for an accuracy budget


def _automatic_plan_of_digits_mlp():
    """digits_mlp's neurons swept at 0.2, 0.5, 0.8, then an automatic plan to 60% of the MACs."""
    at = new_app("digits_mlp")
    at.switch_page(PAGE).run()
    at.selectbox(key="sens_gran").set_value("neuron").run()
    at.multiselect(key="sens_amounts").set_value([0.2, 0.5, 0.8]).run()
    sweep(at, "digits_mlp")
    at.selectbox(key="sens_target").set_value("max_macs").run()
    at.number_input(key="sens_value_max_macs").set_value(0.6).run()
    at.button(key="sens_build").click().run()
    ok(at)
    return at


def test_an_automatic_plan_is_built_measured_and_becomes_the_plan():
    at = _automatic_plan_of_digits_mlp()
    ws = workspace(at)
    assert len(ws.plan.steps) == 1 and ws.plan.steps[0].layers
    assert ws.metrics(latency=False).macs <= 0.6 * ws.base_metrics(latency=False).macs
    assert any(s.value.startswith("met: measured") for s in at.success)
    labels = [m.label for m in at.metric]
    assert {"Predicted accuracy", "Measured accuracy"} <= set(labels)
    assert any("Amount the automatic plan chose per layer" in x for x in titles(at))


def test_criteria_are_compared_by_outcome():
    at = new_app("digits_mlp")
    at.switch_page(PAGE).run()
    at.multiselect(key="sens_amounts").set_value([0.3, 0.7]).run()
    at.multiselect(key="sens_curve_crits").set_value(["l1", "random"]).run()
    at.button(key="sens_curves_run").click().run()
    finish_job(at, "sens_curves_job_digits_mlp")
    ok(at)
    assert any("Criteria compared by outcome: accuracy after a global amount" in x for x in titles(at))
    assert any(s.value.startswith("Criteria compared: 2 × 2") for s in at.success)


def test_a_sweep_is_kept_for_the_plan_it_started_on_when_the_plan_changes_meanwhile(monkeypatch):
    """Issue 22: the sweep's job runs on a snapshot taken when it starts (a copy of the model,
    the data), never on ``ws``: a plan changed while it runs changes nothing it sweeps, and
    its result is kept for the plan it started on, keyed by that plan."""
    gate = threading.Event()

    class Held(J.CallJob):  # the job's thread starts its work once the plan has changed
        def _work(self):
            gate.wait(120)
            super()._work()

    monkeypatch.setattr(J, "CallJob", Held)
    at = new_app("digits_mlp")
    at.switch_page(PAGE).run()
    at.selectbox(key="sens_gran").set_value("neuron").run()
    at.multiselect(key="sens_amounts").set_value([0.3, 0.6]).run()
    ws = workspace(at)
    started_on, source = ws.plan.key(), ws.metrics(latency=False).accuracy
    at.button(key="sens_run").click().run()
    ok(at)
    assert isinstance(at.session_state["sens_job_digits_mlp"], Held) and not gate.is_set()
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5))  # the plan changes while it runs
    assert ws.metrics(latency=False).accuracy != source
    gate.set()
    finish_job(at, "sens_job_digits_mlp")
    ok(at)
    (key, s), = [(k, v) for k, v in ws.sweeps.items() if isinstance(v, Sensitivity)]
    assert s.complete and s.plan == started_on and key[1] == started_on and s.plan_steps == 0
    assert s.source["accuracy"] == source  # the model it started on, not the pruned one
    assert ws.finished_sweep("l1", "neuron", [0.3, 0.6]) is None  # the current plan has none yet
    assert any("No sweep of the current plan" in i.value for i in at.info)
    ws.undo()
    assert ws.finished_sweep("l1", "neuron", [0.3, 0.6]) is s


def test_a_quantised_plan_offers_to_remove_the_quantize_step_and_then_sweeps():
    """Issue 23 (8): after a quantize step the page said "Undo the quantize step first" with
    no way to do it there: a dead end."""
    from core.recover import Quantize

    at = new_app("digits_mlp")
    ws = workspace(at)
    ws.add_step(Prune(sparsity=0.3))
    ws.add_step(Quantize())
    at.switch_page("views/sensitivity.py").run()
    ok(at)
    assert any("ends in a quantize step" in i.value for i in at.info)
    assert not [s for s in at.selectbox if s.key == "sens_gran"]  # no sweep controls on an int8 model
    at.button(key="sens_drop_quantize").click().run()
    ok(at)
    assert ws.plan.steps == (Prune(sparsity=0.3),)
    assert any(s.value.startswith("Removed the quantize step") for s in at.success)
    assert [s for s in at.selectbox if s.key == "sens_gran"]  # the sweep controls are back
    ws.undo()
    assert isinstance(ws.plan.steps[-1], Quantize)  # one history entry: undo brings it back


def test_after_an_automatic_plan_its_result_comes_first_with_the_sweep_it_was_planned_from():
    """Issue 23 (9): the automatic plan became the plan, so the page said "No sweep of the
    current plan" and "Run a complete sweep first" (now "Run the sweep above for any target") above its
    success, and the heatmap went."""
    at = _automatic_plan_of_digits_mlp()
    assert any(s.value.startswith("met: measured") for s in at.success)
    assert not any("No sweep of the current plan" in i.value for i in at.info)
    assert not any("Run the sweep above for any target" in c.value for c in at.caption)
    t = titles(at)
    chose = next(i for i, x in enumerate(t) if "Amount the automatic plan chose per layer" in x)
    heat = next(i for i, x in enumerate(t) if "Accuracy drop when one layer is pruned alone" in x)
    assert chose < heat  # the result first, then the sweep it was planned from
    assert any(c.value.startswith("Swept before the automatic plan: the base model") for c in at.caption)
    assert at.button(key="sens_run").label == "Sweep the new plan" and not at.button(key="sens_run").disabled
    sweep(at, "digits_mlp")  # the new plan's own sweep: the page is the ordinary one again
    assert any(c.value.startswith("Source: the plan's model (1 step(s))") for c in at.caption)
    assert not any(c.value.startswith("Swept before the automatic plan") for c in at.caption)


def test_an_automatic_plan_for_a_drop_sweeps_only_what_the_budget_can_use():
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    at.selectbox(key="sens_gran").set_value("channel").run()
    at.number_input(key="sens_value_drop").set_value(2.0).run()
    at.button(key="sens_run_budget").click().run()
    ok(at)
    finish_job(at, "sens_job_digits_cnn")
    ok(at)
    ws = workspace(at)
    sens, = ws.sweeps.values()
    points = sum(len(p) for p in sens.layers.values())
    assert sens.stop_harm == 7 and points < 3 * 9  # some layer stopped before 90%
    assert any(s.value == f"Swept for a drop of 2 points: {points} of 27 models evaluated in {sens.seconds:.1f} s."
               for s in at.success)
    assert any("Swept for a drop of at most 2 points" in c.value for c in at.caption)
    assert any("Accuracy drop when one layer is pruned alone" in x for x in titles(at))  # blanks past each stop
    assert at.selectbox(key="sens_target").options == ["accuracy drop at most (points)"]
    at.number_input(key="sens_value_drop").set_value(3.0).run()  # past what the sweep can plan for
    assert any("stopped each layer for a drop of at most 2 points" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "sens_build"]
    at.number_input(key="sens_value_drop").set_value(2.0).run()
    at.button(key="sens_build").click().run()
    ok(at)
    assert len(ws.plan.steps) == 1 and ws.plan.steps[0].layers
    assert any(s.value.startswith("met: measured") for s in at.success)
