"""Readouts that are true and in step with the plan (AppTest): delta arrows, criterion
switching, controls that show the plan, the step count, latency batch, structured labels,
one history entry per adjustment, the default layer for heads, the History page."""
from __future__ import annotations

import dataclasses
import json
import time

from core.metrics.cost import Latency, timed_beside
from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import new_app, workspace
from tests.helpers.app import ok as _ok

DOWN, UP = 0, 1  # MetricDirection
RED, GREEN, GRAY = 0, 1, 2  # MetricColor


def _metric(at, label):
    (m,) = [m for m in at.metric if m.label == label]
    return m


def test_a_decrease_points_down_and_its_colour_says_better_or_worse():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.9).run()
    _ok(at)
    nz = _metric(at, "Non-zero params")
    assert nz.delta.startswith("-") and nz.proto.direction == DOWN and nz.proto.color == GREEN
    acc = _metric(at, "Accuracy")
    assert acc.delta.startswith("-") and acc.proto.direction == DOWN and acc.proto.color == RED
    loss = _metric(at, "Loss")
    assert loss.delta.startswith("+") and loss.proto.direction == UP and loss.proto.color == RED
    assert "−" not in "".join(m.delta or "" for m in at.metric)  # never a typographic minus


def test_fewer_macs_after_structured_pruning_is_a_green_down_arrow_and_removed_is_labelled():
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.slider(key="global_sparsity").set_value(0.3).run()
    _ok(at)
    macs = _metric(at, "MACs / example")
    assert macs.delta.startswith("-") and "× base" in macs.delta
    assert macs.proto.direction == DOWN and macs.proto.color == GREEN
    ws = workspace(at)
    m, base = ws.metrics(), ws.base_metrics()
    removed = f"parameters removed: {100 * (1 - m.params / base.params):.1f}% of the base's"
    assert any(removed in c.value for c in at.caption)


def test_switching_criterion_edits_the_step_and_the_controls_show_it():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    at.selectbox(key="prune_criterion").set_value("wanda").run()
    _ok(at)
    ws = workspace(at)
    (step,) = ws.plan.steps  # the step was switched, not stacked
    assert step == Prune(criterion="wanda", sparsity=0.5)
    assert at.slider(key="global_sparsity").value == 0.5
    assert ws.reports[0].threshold_unit == "score"
    assert any("Global threshold: score <" in c.value for c in at.caption)
    assert not any("|w| <" in c.value for c in at.caption)


def test_the_controls_show_the_plan_after_visiting_another_page():
    """Streamlit drops a left page's widget values; coming back, the slider shows the step."""
    at = new_app("digits_cnn")
    at.slider(key="global_sparsity").set_value(0.3).run()
    at.switch_page("views/model.py").run()
    at.switch_page("views/prune.py").run()
    _ok(at)
    assert workspace(at).plan.steps == (Prune(sparsity=0.3),)
    assert at.slider(key="global_sparsity").value == 0.3


def test_adding_a_step_on_top_is_explicit_and_says_what_it_removed():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    at.button(key="prune_add_step").click().run()
    _ok(at)
    assert len(workspace(at).plan.steps) == 2
    assert at.slider(key="global_sparsity").value == 0.0  # the new step prunes nothing yet
    at.selectbox(key="prune_criterion").set_value("taylor").run()
    at.slider(key="global_sparsity").set_value(0.6).run()
    _ok(at)
    ws = workspace(at)
    assert [s.criterion for s in ws.plan.steps] == ["l1", "taylor"]
    assert any("were set to zero by this step" in c.value for c in at.caption)
    at.slider(key="global_sparsity").set_value(0.7).run()  # now edits the step it added
    assert len(workspace(at).plan.steps) == 2


def test_the_step_count_is_in_step_with_the_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    assert any(c.value.startswith("1 step(s) in the plan") for c in at.caption)
    assert not any("step(s)" in c.value for c in at.sidebar.caption)


def test_base_and_current_are_timed_at_the_chosen_latency_batch():
    at = new_app("digits_mlp")
    at.switch_page("views/model.py").run()
    at.selectbox(key="latency_batch_choice").set_value(8).run()
    _ok(at)
    assert "batch of 8" in _metric(at, "Latency (base)").help
    at.switch_page("views/prune.py").run()
    at.slider(key="global_sparsity").set_value(0.3).run()
    ws = workspace(at)
    assert ws.metrics().latency.batch_size == ws.base_metrics().latency.batch_size == 8
    assert "batch of 8" in _metric(at, "Latency").help


def test_one_adjustment_of_a_slider_is_one_history_entry(monkeypatch):
    import core.workspace.plans as plans

    ticks = iter(range(0, 1000))  # each commit 1 s after the last, however long a run takes here
    monkeypatch.setattr(plans, "_clock", lambda: float(next(ticks)))
    at = new_app("digits_mlp")
    for v in (0.1, 0.11, 0.12, 0.13, 0.14):
        at.slider(key="global_sparsity").set_value(v).run()
    ws = workspace(at)
    assert len(ws.history) == 2 and ws.plan.steps[0].sparsity == 0.14
    assert len({e.plan for e in ws.log}) >= 5  # the log of evaluated plans keeps every value
    ws.undo()
    assert ws.plan.steps == ()


def test_head_granularity_starts_on_a_layer_with_heads():
    at = new_app("digits_vit")
    at.selectbox(key="prune_granularity").set_value("head").run()
    _ok(at)
    assert at.selectbox(key="layer").value.endswith("attn.qkv")
    assert not any("has no prunable heads" in i.value for i in at.info)


def test_history_restore_box_follows_the_plan_and_ticks_are_short():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.4).run()
    at.switch_page("views/history.py").run()
    _ok(at)
    assert "prune weight by l1: sparsity 40.0%" in at.selectbox(key="restore_choice").value
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["tickformat"] == ".3~s"


def _noisy_pair(ws):
    """A noisy interleaved timing (base, current) in the workspace's conditions, as if the
    machine was busy while timing."""
    batch, threads, device, precision = ws.evaluator.conditions()
    how = dict(median_ms=2.0, iqr_ms=6.0, batch_size=batch, threads=threads, device=device, runs=6,
               precision=precision, interleaved=True, timed_at=time.time())
    return Latency(**how), Latency(**how)


def test_a_noisy_latency_says_so_and_can_be_timed_again():
    at = new_app("digits_mlp")
    ws = workspace(at)
    noisy = _noisy_pair(ws)
    key = ws._metrics_key(ws.plan, "quick")
    ws._metrics[key] = dataclasses.replace(ws._metrics[key], latency=noisy[1], base_latency=noisy[0])
    ws.evaluator._arch_cache[ws.evaluator._pair_key(ws.evaluator.base_signature)] = noisy
    at.run()
    _ok(at)
    lat = _metric(at, "Latency")
    assert (lat.value, lat.delta) == ("2 ms", "noisy")  # issue 23 (15): not "2 ms ± 6", and short enough to read
    assert any("latency is noisy (IQR 3× the median)" in c.value for c in at.caption)
    at.button(key="retime_digits_mlp").click().run()
    _ok(at)
    assert ws.metrics("quick").latency not in noisy
    again = _metric(at, "Latency")
    assert (again.value, again.delta) != ("2 ms", "noisy")


def test_a_masked_plan_says_how_its_latency_was_timed_and_can_time_it_again():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    _ok(at)
    ws = workspace(at)
    first = ws.metrics("quick")
    help_text = _metric(at, "Latency").help
    assert f"median of {first.latency.runs} runs" in help_text and "interleaved with the base" in help_text
    assert "The base, timed beside it" in help_text and ("just now" in help_text or " ago" in help_text)
    at.button(key="retime_digits_mlp").click().run()  # issue 23 (2): every plan offers it, not only noisy ones
    _ok(at)
    again = ws.metrics("quick")
    assert again.latency is not first.latency and again.latency.timed_at > first.latency.timed_at
    assert timed_beside(again.base_latency, again.latency)


def test_history_plots_latency_only_for_plans_timed_beside_their_base_and_marks_the_rest():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    ws = workspace(at)
    timed = ws.plan
    ws.forget_latency()  # the next plan finds no timing to reuse and is logged untimed
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.6),)))
    ws.metrics(latency=False)
    ws.set_plan(Plan(ws.name, (Prune(sparsity=0.45),)))  # and one whose timing was noisy
    ws.metrics(latency=False)
    noisy = _noisy_pair(ws)
    ws.log[-1] = dataclasses.replace(ws.log[-1], metrics=dataclasses.replace(
        ws.log[-1].metrics, latency=noisy[1], base_latency=noisy[0]))
    ws.goto(timed)
    at.switch_page("views/history.py").run()
    _ok(at)
    (rest,) = [c.value for c in at.caption if c.value.startswith("Not plotted")]
    assert "latency not timed beside the base" in rest and "sparsity 60.0%" in rest and "45.0%" not in rest
    spec = json.loads(at.get("plotly_chart")[1].proto.spec)
    traces = {t["name"]: t for t in spec["data"]}
    assert traces["noisy timing (off the front)"]["marker"]["symbol"] == "circle-open"
    assert 1.0 in traces["noisy timing (off the front)"]["x"]  # 2 ms beside a 2 ms base
    m = ws.metrics("quick")  # a ratio, not milliseconds (hollow too when this busy machine made it noisy)
    noisy_now = m.latency.noisy or m.base_latency.noisy
    assert m.latency.median_ms / m.base_latency.median_ms in traces[
        "noisy timing (off the front)" if noisy_now else "plans"]["x"]
    assert len(traces["plans"]["x"]) + len(traces["noisy timing (off the front)"]["x"]) == 3  # base, 30%, 45%: not 60%
    table = at.dataframe[0].value
    order = list(at.dataframe[0].proto.column_order)  # issue 23 (15): the latency column was cut off at the right
    assert order.index("latency") < order.index("sparsity") and order[:3] == ["#", "time", "steps"]
    assert "2 ms (noisy)" in table["latency"].tolist() and "not timed" in table["latency"].tolist()


def test_structured_widths_are_rounded_to_the_chosen_multiple():
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    assert at.number_input(key="prune_round_to").value == 8
    at.slider(key="global_sparsity").set_value(0.3).run()
    _ok(at)
    ws = workspace(at)
    step = ws.plan.steps[-1]
    assert step.round_to == 8 and "multiples of 8" in step.describe()
    convs = [m for m in ws.model.modules() if m.__class__.__name__ == "Conv2d"]
    assert all(c.out_channels % 8 == 0 for c in convs)
    at.number_input(key="prune_round_to").set_value(1).run()  # off: the step follows
    _ok(at)
    assert ws.plan.steps[-1].round_to is None
    assert any(c.out_channels % 8 for c in ws.model.modules() if c.__class__.__name__ == "Conv2d")
