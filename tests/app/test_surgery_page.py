"""The Surgery page: cut / copy / paste / duplicate, guides, heal, undo (AppTest)."""
from __future__ import annotations

import json

import pytest

from core.recover import Heal
from core.surgery import Cut, Paste
from tests.helpers.app import finish_job, metric, new_app, workspace
from tests.helpers.app import ok as _ok

PAGE = "views/surgery.py"


def surgery(model: str):
    at = new_app(model)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_cut_a_block_changes_the_metrics_and_undo_restores_them():
    at = surgery("digits_cnn")
    _ok(at)
    acc0, macs0 = metric(at, "Accuracy"), metric(at, "MACs / example")
    at.multiselect(key="surgery_selected").set_value(["features.1"]).run()
    at.button(key="surgery_cut").click().run()
    _ok(at)
    ws = workspace(at)
    assert isinstance(ws.plan.steps[-1], Cut) and ws.plan.steps[-1].blocks == ("features.1",)
    assert metric(at, "Accuracy") != acc0 and metric(at, "MACs / example") != macs0
    assert "features.1" not in at.multiselect(key="surgery_selected").options
    at.button(key="surgery_undo").click().run()
    _ok(at)
    assert workspace(at).plan.steps == ()
    assert metric(at, "Accuracy") == acc0 and metric(at, "MACs / example") == macs0
    at.button(key="surgery_redo").click().run()
    assert isinstance(workspace(at).plan.steps[-1], Cut)


@pytest.mark.slow
def test_cut_and_paste_run_in_the_page_with_a_progress_bar_that_says_what_they_do(monkeypatch):
    """A cut or paste is run where the page can draw (not in the button's callback), with
    progress text for each phase, and the metrics drawn after it are the new model's."""
    import streamlit

    texts = []
    real = streamlit.delta_generator.DeltaGenerator.progress

    def recording(self, value, text=None):
        texts.append(text)
        return real(self, value, text=text)

    monkeypatch.setattr(streamlit.delta_generator.DeltaGenerator, "progress", recording)
    at = surgery("digits_resnet")
    macs0 = metric(at, "MACs / example")
    at.multiselect(key="surgery_selected").set_value(["layers.1"]).run()
    texts.clear()
    at.button(key="surgery_cut").click().run()
    _ok(at)
    assert metric(at, "MACs / example") != macs0  # drawn after the cut, in the same run
    assert any(t and t.startswith("Cut layers.1: building plan step 1 of 1") for t in texts), texts
    assert any(t and "evaluating the new model on the quick subset" in t for t in texts), texts
    assert any(s.value == "Cut layers.1." for s in at.success)
    texts.clear()
    at.button(key="surgery_paste").click().run()
    _ok(at)
    assert any(t and t.startswith("Paste 1 block(s): building plan step 2 of 2") for t in texts), texts
    assert isinstance(workspace(at).plan.steps[-1], Paste)


def test_cut_goes_to_the_clipboard_and_pastes_back():
    at = surgery("digits_cnn")
    at.multiselect(key="surgery_selected").set_value(["features.2"]).run()
    at.button(key="surgery_cut").click().run()
    at.number_input(key="surgery_at").set_value(2).run()
    at.button(key="surgery_paste").click().run()
    _ok(at)
    step = workspace(at).plan.steps[-1]
    assert isinstance(step, Paste) and step.block == "features.2" and step.source == "digits_cnn"


@pytest.mark.slow
def test_duplicate_and_donor_paste_are_plan_steps():
    at = surgery("digits_resnet")
    at.multiselect(key="surgery_selected").set_value(["layers.3"]).run()
    at.button(key="surgery_duplicate").click().run()
    _ok(at)
    assert workspace(at).plan.steps[-1] == Paste("layers.3", at=4)
    at.selectbox(key="surgery_donor").set_value("digits_cnn").run()
    at.selectbox(key="surgery_donor_block").set_value("features.2").run()
    at.button(key="surgery_add_donor").click().run()
    at.button(key="surgery_paste").click().run()
    _ok(at)
    last = workspace(at).plan.steps[-1]
    assert last.source == "digits_cnn" and last.block == "features.2"


def test_impossible_cut_shows_an_error_and_keeps_the_plan():
    at = surgery("digits_cnn")
    at.radio(key="surgery_bridge").set_value("identity").run()
    at.multiselect(key="surgery_selected").set_value(["features.1"]).run()
    at.button(key="surgery_cut").click().run()
    assert not at.exception
    assert any("identity" in e.value for e in at.error)
    assert workspace(at).plan.steps == ()


@pytest.mark.slow
def test_opening_the_page_computes_no_guides_and_times_latency_after_drawing():

    at = surgery("digits_resnet")
    _ok(at)
    ws = workspace(at)
    assert ws.cached_guides() is None  # guides cost a cut per block: only on request
    assert not any("Suggested cut" in m.value for m in at.markdown)
    at.multiselect(key="surgery_selected").set_value(["layers.1"]).run()
    at.button(key="surgery_cut").click().run()
    _ok(at)
    m = ws.metrics("quick", latency=False)
    assert m.latency is not None and m.base_latency is not None  # timed at the end of the run
    assert metric(at, "Latency") not in (None, "timing…")


def test_guides_suggest_a_cut_that_can_be_applied():
    at = surgery("digits_mlp")
    _ok(at)
    assert "influence" not in at.dataframe[0].value.columns  # no empty guide columns before
    at.button(key="surgery_guides_btn").click().run()
    _ok(at)
    assert any("Suggested cut" in m.value for m in at.markdown)
    table = at.dataframe[0].value  # the block table shows them in the run that computed them
    assert table["influence"].notna().any() and table["drop-one acc"].notna().all()
    at.button(key="surgery_apply_suggestion").click().run()
    _ok(at)
    assert isinstance(workspace(at).plan.steps[-1], Cut)


def test_heal_adds_a_heal_step_after_a_cut():
    at = surgery("digits_cnn")
    at.radio(key="surgery_bridge").set_value("lstsq").run()
    at.multiselect(key="surgery_selected").set_value(["features.2"]).run()
    at.button(key="surgery_cut").click().run()
    at.number_input(key="heal_steps").set_value(5).run()
    cut_acc = metric(at, "Accuracy")
    at.button(key="heal_start").click().run()
    finish_job(at, "heal_job")
    _ok(at)
    ws = workspace(at)
    step = ws.plan.steps[-1]
    assert isinstance(step, Heal) and step.steps == 5
    # the metrics, the message and the loss chart show the healed model at once
    assert metric(at, "Accuracy") == f"{100 * ws.metrics().accuracy:.1f}%"
    assert any(s.value.startswith("Healing: trained ") for s in at.success)
    assert any(json.loads(c.proto.spec)["layout"]["title"]["text"] == "Heal: training loss"
               for c in at.get("plotly_chart") if json.loads(c.proto.spec)["layout"].get("title"))
    assert cut_acc is not None


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits_vit", "digits_resnet"])
def test_the_page_renders_with_guides_on_transformer_and_resnet(model):
    at = surgery(model)
    at.button(key="surgery_guides_btn").click().run()
    _ok(at)
    assert any("Suggested cut" in m.value for m in at.markdown)
    assert len(at.multiselect(key="surgery_selected").options) == 4


def test_a_revisit_recomputes_nothing_the_guides_keep_and_the_table_has_no_bare_none(monkeypatch):
    """Coming back to the page after the guides were computed drew the suggestion again
    (a joint cut and an evaluation) with no progress shown; now it is kept with them."""
    import streamlit

    from core.surgery import guides as G

    said, real = [], streamlit.spinner
    monkeypatch.setattr(streamlit, "spinner", lambda text="", **k: said.append(text) or real(text, **k))
    at = surgery("digits_cnn")
    at.button(key="surgery_guides_btn").click().run()
    _ok(at)
    assert any(t.startswith("Suggested cut of 1 block(s): cutting them together") for t in said)  # not a silent wait
    at.switch_page("views/prune.py").run()
    calls = []
    monkeypatch.setattr(G.Cut, "build", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    at.switch_page(PAGE).run()
    _ok(at)
    assert calls == [] and any("Suggested cut" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    cells = [str(v) for v in table["influence"]] + [str(v) for v in table["drop-one acc"]]
    assert "None" not in cells and "nan" not in cells
    assert "– (changes the shape)" in cells  # features.0 goes from 1 to 32 channels


@pytest.mark.parametrize("per_step, expected", [(7.8, 5), (0.01, 100)])
def test_heal_steps_default_to_what_fits_about_45_seconds_here(monkeypatch, per_step, expected):
    """100 heal steps took 776 s after a donor paste: the default follows the time a step takes."""
    import app.recover_ui as R

    monkeypatch.setattr(R, "seconds_per_step", lambda ws, batch_size=64: (per_step, "a test figure"))
    at = surgery("digits_cnn")
    box = at.number_input(key="heal_steps")
    assert box.value == expected and "estimated from a test figure" in box.help
    box.set_value(7).run()
    assert at.number_input(key="heal_steps").value == 7  # the person's number stays
    assert not any("briefly" in e.label for e in at.expander)


def test_seconds_per_step_is_estimated_from_this_machines_timing_of_the_model():
    from app.recover_ui import seconds_per_step

    at = surgery("digits_cnn")
    per, basis = seconds_per_step(workspace(at))
    assert 0 < per < 60 and basis
