"""The Explain page: changed predictions, confusion difference, divergence (AppTest)."""
from __future__ import annotations

import pytest

from core.prune import Prune
from tests.helpers.app import new_app, workspace
from tests.helpers.app import ok as _ok

PAGE = "views/explain.py"


def explain_after_channel_prune():
    """The Explain page of digits_cnn after 50% of its channels were removed: (app, workspace)."""
    at = new_app("digits_cnn")
    ws = workspace(at)
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    at.switch_page(PAGE).run()
    _ok(at)
    return at, ws


def chart_specs(at) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_an_empty_plan_says_there_is_nothing_to_explain():
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    _ok(at)
    assert any("no steps yet" in i.value for i in at.info)


def test_after_a_channel_prune_the_page_shows_what_changed():
    at, ws = explain_after_channel_prune()
    n = len(ws.changes("quick").changed())
    assert any(m.value.startswith(f"**{n} of 256** predictions changed") for m in at.markdown)
    assert len(at.get("image")) == 24 + 12  # a gallery of the changed examples, then the unit's top 12
    titles = chart_specs(at)
    assert any("Confusion: current minus base" in t for t in titles)
    assert any("Where the networks diverge (CKA per layer)" in t for t in titles)
    at.selectbox(key="explain_class").set_value("3").run()
    _ok(at)
    at.radio(key="explain_subset").set_value("full").run()
    _ok(at)
    assert any("of 450** predictions changed" in m.value for m in at.markdown)


def test_the_unit_view_and_attribution_follow_the_plan():
    at, ws = explain_after_channel_prune()
    assert any("Input gradients: where each model looks" in t for t in chart_specs(at))
    assert at.selectbox(key="explain_unit_layer").value == "features.0.0"
    for unit in (0, 1, 2, 3):
        at.number_input(key="explain_unit").set_value(unit).run()
        _ok(at)
        r = ws.unit_report("features.0.0", unit, "channel")
        status = "removed by step 1" if r["removed"] else "kept by the plan"
        assert any(m.value.startswith(f"**features.0.0, channel {unit}** of the base model: {status}")
                   for m in at.markdown)
    assert any("Removed with it" in m.value for m in at.markdown)


def test_the_confusion_of_base_and_current_can_be_shown_too():
    at, _ = explain_after_channel_prune()
    for which in ("base", "current"):
        at.radio(key="explain_confusion_of").set_value(which).run()
        _ok(at)
        assert any(f"Confusion of the {which} model" in t for t in chart_specs(at))


@pytest.mark.slow
def test_a_unit_picked_elsewhere_opens_in_the_unit_view_with_its_receptive_fields_and_group():
    """What the Prune page's "Explain channel u of layer" button sets before switching here."""
    at = new_app("digits_resnet")
    at.session_state["explain_unit_gran"] = "channel"
    at.session_state["explain_unit_layer"] = "stem.0"
    at.session_state["explain_unit"] = 5
    at.switch_page(PAGE).run()
    _ok(at)
    assert any("no steps yet" in i.value for i in at.info)  # an empty plan: the unit view still shows
    assert any(m.value.startswith("**stem.0, channel 5** of the base model") for m in at.markdown)
    assert any("Removed with channel 5 of stem.0" in t for t in chart_specs(at))
    assert any("red box is the input region" in c.value for c in at.caption)
    assert any("The Layer list leaves out head.2, the output layer" in c.value for c in at.caption)


def test_the_prune_page_shows_which_examples_changed_on_request():
    at = new_app("digits_cnn")
    ws = workspace(at)
    assert at.toggle(key="prune_changes").disabled  # nothing to show for an empty plan
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    at.run()
    at.toggle(key="prune_changes").set_value(True).run()
    _ok(at)
    n = len(ws.changes("quick").changed())
    assert any(c.value.startswith(f"**{n} of 256** quick-subset predictions differ") for c in at.caption)
    assert len(at.get("image")) == min(12, n)


def test_grad_cam_is_offered_for_a_convolutional_model():
    at, ws = explain_after_channel_prune()
    assert at.radio(key="explain_attr_method").options == ["input gradient", "Grad-CAM"]
    at.radio(key="explain_attr_method").set_value("gradcam").run()
    _ok(at)
    assert any("Grad-CAM: where each model looks" in t for t in chart_specs(at))
    at = new_app("digits_mlp")
    workspace(at).add_step(Prune(sparsity=0.5))
    at.switch_page(PAGE).run()
    _ok(at)
    assert at.radio(key="explain_attr_method").options == ["input gradient"]  # no feature map
