"""The Explain page's unit view (AppTest): what its Layer list leaves out agrees with the
group drawn below it, on a model whose last module is head.2 (digits_cnn)."""
from __future__ import annotations

from tests.helpers.app import new_app, ok

PAGE = "views/explain.py"


def _notes(at, layer: str) -> list[str]:
    return [c.value for c in at.caption if layer in c.value and "Top-activating" not in c.value]


def test_the_output_layer_is_said_to_be_left_out_of_the_layer_list_and_drawn_when_it_changes():
    """It said "Not listed: head.2" under a group that lists head.2 (it loses input
    channels with a channel of features.2.0)."""
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    ok(at)
    layers = at.selectbox(key="explain_unit_layer")
    assert "head.2" not in layers.options and "features.2.0" in layers.options
    (note,) = _notes(at, "head.2")  # features.0.0's channel leaves head.2 alone
    assert note.startswith("The Layer list leaves out head.2, the output layer") and "drawn below" not in note
    layers.set_value("features.2.0").run()
    ok(at)
    (note,) = _notes(at, "head.2")
    in_group = any("head.2" in t and "loses input channels" in t for t in
                   [c.proto.spec for c in at.get("plotly_chart") if "Removed with" in c.proto.spec])
    assert in_group, "head.2 loses input channels with features.2.0's channel 0"
    assert "head.2 is drawn below because it loses input channels with this unit" in note
    assert not any(c.value.startswith("Not listed") for c in at.caption)
