"""Issue 25: a threshold released on the histogram's handle moves the plan and the slider
(the value path; the real drag in a browser is tests/e2e/test_threshold_drag.py)."""
from __future__ import annotations

import pytest

from tests.helpers.app import handle_args, new_app, ok, workspace


def _release(at, key: str, value: float, seq: float, ident: str):
    at.session_state[key] = {"value": value, "seq": seq, "id": ident}
    return at.run()


def test_a_released_global_threshold_sets_the_step_and_the_slider():
    at = new_app("digits_mlp")
    at.radio(key="global_mode").set_value("threshold").run()
    ok(at)
    _release(at, "drag_global", 0.05, 1.0, "digits_mlp:threshold")
    ok(at)
    ws = workspace(at)
    assert ws.plan.steps[-1].threshold == pytest.approx(0.05)
    assert at.slider(key="global_threshold").value == pytest.approx(0.05)
    assert any("Global threshold: |w| < 0.05" in c.value for c in at.caption)
    plan, history = ws.plan, len(ws.history)
    at.run()  # the same release read again is not a new one
    ok(at)
    assert ws.plan == plan and len(ws.history) == history
    _release(at, "drag_global", 0.02, 2.0, "digits_mlp:threshold")
    ok(at)
    assert ws.plan.steps[-1].threshold == pytest.approx(0.02)
    assert at.slider(key="global_threshold").value == pytest.approx(0.02)


def test_a_released_share_sets_the_global_sparsity_and_a_slider_move_keeps_the_handle_value():
    at = new_app("digits_mlp")
    _release(at, "drag_global", 0.3, 1.0, "digits_mlp:sparsity")
    ok(at)
    ws = workspace(at)
    assert ws.plan.steps[-1].sparsity == pytest.approx(0.3)
    assert at.slider(key="global_sparsity").value == pytest.approx(0.3)
    at.slider(key="global_sparsity").set_value(0.6).run()
    ok(at)
    assert ws.plan.steps[-1].sparsity == pytest.approx(0.6)
    assert at.session_state["global_sparsity"] == pytest.approx(0.6)  # what the handle is drawn at


def test_a_release_on_another_mode_or_layer_is_not_applied():
    at = new_app("digits_mlp")
    _release(at, "drag_global", 0.04, 1.0, "digits_mlp:threshold")  # the control shows sparsity
    ok(at)
    assert workspace(at).plan.steps == ()
    at.selectbox(key="layer").set_value("layers.3").run()
    _release(at, "drag_layer", 0.4, 2.0, "digits_mlp:weight:layers.0")
    ok(at)
    assert workspace(at).plan.steps == ()


def test_a_released_layer_handle_sets_that_layers_override():
    at = new_app("digits_mlp")
    at.selectbox(key="layer").set_value("layers.3").run()
    _release(at, "drag_layer", 0.4, 1.0, "digits_mlp:weight:layers.3")
    ok(at)
    step = workspace(at).plan.steps[-1]
    assert step.override_for("layers.3").sparsity == pytest.approx(0.4)
    s = at.slider(key="ov_digits_mlp_layers.3")
    assert s.value == pytest.approx(0.4) and "active" in s.label


def test_a_released_unit_score_handle_sets_that_layers_channel_override():
    """Structured: the handle sits on the layer's unit scores; a release is the fraction of
    its channels pruned, and the report removes that many."""
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.selectbox(key="layer").set_value("features.1.0").run()
    ok(at)
    assert handle_args(at, "digits_cnn:channel:features.1.0")["mode"] == "share"
    _release(at, "drag_layer", 0.5, 1.0, "digits_cnn:channel:features.1.0")
    ok(at)
    ws = workspace(at)
    assert ws.plan.steps[-1].override_for("features.1.0").sparsity == pytest.approx(0.5)
    pruned, total = ws.reports[-1].units["features.1.0"]
    assert pruned == round(0.5 * total)
    assert at.slider(key="ov_digits_cnn_features.1.0").value == pytest.approx(0.5)
    assert handle_args(at, "digits_cnn:channel:features.1.0")["value"] == pytest.approx(0.5)


def test_a_released_wanda_score_handle_sets_the_weight_override():
    """Other criteria: the handle sits on the layer's weight scores under that criterion."""
    at = new_app("digits_mlp")
    at.selectbox(key="prune_criterion").set_value("wanda").run()
    at.selectbox(key="layer").set_value("layers.3").run()
    ok(at)
    _release(at, "drag_layer", 0.3, 1.0, "digits_mlp:weight:layers.3")
    ok(at)
    step = workspace(at).plan.steps[-1]
    assert step.criterion == "wanda" and step.override_for("layers.3").sparsity == pytest.approx(0.3)
    assert at.slider(key="ov_digits_mlp_layers.3").value == pytest.approx(0.3)
