"""Issue 22: a slider value outside its range, sent by a client, leaves the plan as it was
(Streamlit falls back to the widget's default; the default 0 once removed the prune step)."""
from __future__ import annotations

import pytest

from tests.helpers.app import finish_job, new_app, ok, workspace


@pytest.mark.parametrize("bad", [1.5, -0.2])
def test_an_out_of_range_global_sparsity_leaves_the_plan_as_it_was(bad):
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ok(at)
    ws = workspace(at)
    plan, history = ws.plan, len(ws.history)
    assert len(plan.steps) == 1 and plan.steps[0].sparsity == pytest.approx(0.5)
    at.slider(key="global_sparsity").set_value(bad).run()
    ok(at)
    assert ws.plan == plan and len(ws.history) == history
    assert at.slider(key="global_sparsity").value == pytest.approx(0.5)


def test_the_override_slider_shows_the_amount_that_applies_after_a_granularity_switch():
    """Issue 23 item 6: an override of weights stayed on the slider after switching to
    channels, where nothing is pruned and the global amount applies."""
    at = new_app("digits_cnn")
    layer = at.selectbox(key="layer").value
    at.slider(key=f"ov_digits_cnn_{layer}").set_value(0.79).run()
    ok(at)
    assert workspace(at).plan.steps[-1].override_for(layer).sparsity == pytest.approx(0.79)
    at.selectbox(key="prune_granularity").set_value("channel").run()
    ok(at)
    layer = at.selectbox(key="layer").value
    s = at.slider(key=f"ov_digits_cnn_{layer}")
    assert s.value == pytest.approx(0.0) and "global amount" in s.label


def test_the_override_slider_shows_the_share_the_global_amount_prunes_in_the_layer():
    """Issue 23 item 6: with no override the slider read 0.00 while the global amount pruned
    the layer; it shows the layer's pruned fraction, and moving it sets an override from there."""
    at = new_app("digits_mlp")
    at.selectbox(key="layer").set_value("layers.3").run()
    at.slider(key="global_sparsity").set_value(0.45).run()
    ok(at)
    report = workspace(at).reports[-1]
    pruned, total = report.units["layers.3"]
    s = at.slider(key="ov_digits_mlp_layers.3")
    assert pruned > 0 and s.value == pytest.approx(round(pruned / total, 2))
    assert "global amount" in s.label
    s.set_value(round(pruned / total, 2) + 0.05).run()
    ok(at)
    ov = workspace(at).plan.steps[-1].override_for("layers.3")
    assert ov.sparsity == pytest.approx(round(pruned / total, 2) + 0.05)
    assert "active" in at.slider(key="ov_digits_mlp_layers.3").label


def test_the_override_slider_shows_a_unit_layers_share_of_its_group():
    """Channels: the share of the group the layer produces (the report counts per group)."""
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.slider(key="global_sparsity").set_value(0.5).run()
    ok(at)
    layer = at.selectbox(key="layer").value
    report = workspace(at).reports[-1]
    shares = {round(p / t, 2) for p, t in report.units.values() if t}
    assert at.slider(key=f"ov_digits_cnn_{layer}").value in shares - {0.0}


# Issue 23: a widget value the browser sends back from before the page changed it (a stale
# echo, e.g. with an Undo clicked while a finished fine-tune was being drawn) edits nothing.

def test_a_stale_echo_is_put_back_and_a_later_move_is_the_persons():
    from app import widget_echo

    state = {"global_sparsity": 0.5}
    widget_echo.wrote(state, "global_sparsity", 0.0)  # the plan moved: the page shows 0.0 now
    assert state["global_sparsity"] == 0.0
    state["global_sparsity"] = 0.5  # the browser's old value, sent before the new one arrived
    assert widget_echo.is_echo(state, "global_sparsity", now=100.0)
    assert state["global_sparsity"] == 0.0  # put back
    widget_echo.drawn(state, "global_sparsity", now=100.0)
    state["global_sparsity"] = 0.5
    assert widget_echo.is_echo(state, "global_sparsity", now=100.0 + widget_echo.ECHO_SECONDS / 2)
    state["global_sparsity"] = 0.5  # long after the page showed 0.0: the person moved it there
    assert not widget_echo.is_echo(state, "global_sparsity", now=100.0 + widget_echo.ECHO_SECONDS + 1)
    assert state["global_sparsity"] == 0.5
    widget_echo.wrote(state, "global_sparsity", 0.2)
    state["global_sparsity"] = 0.3  # another value than the one shown before: a move, at once
    assert not widget_echo.is_echo(state, "global_sparsity", now=0.0)


def test_a_stale_slider_value_sent_with_undo_after_a_fine_tune_adds_no_step():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ok(at)
    ws = workspace(at)
    pruned, pos = ws.plan, ws.pos
    at.session_state["prune_ft_steps_auto"] = False
    at.number_input(key="prune_ft_steps").set_value(3).run()
    at.button(key="prune_ft_start").click().run()
    finish_job(at, "prune_ft_job")
    ok(at)
    assert len(ws.plan.steps) == 2 and at.slider(key="global_sparsity").value == 0.0
    entries = len(ws.history)
    # The run that wrote 0.0 into the slider was interrupted before drawing it (the Undo
    # click came in): the browser still shows 0.5 and sends it with the click.
    at.session_state["_echo_global_sparsity"] = {**at.session_state["_echo_global_sparsity"], "drawn": None}
    at.slider(key="global_sparsity").set_value(0.5)
    at.button(key="prune_undo").click().run()
    ok(at)
    assert ws.plan == pruned and ws.pos == pos and len(ws.history) == entries
    assert at.slider(key="global_sparsity").value == 0.5
