"""The step builders the Surgery page calls: paste a clipboard, duplicate a selection."""
from __future__ import annotations

import pytest

from core import surgery as S
from core.errors import ModelError
from core.plan import ApplyContext, Plan, apply
from core.sources.bases import load_base


def test_duplicate_steps_put_each_copy_right_after_its_block_counting_earlier_copies():
    names = ["layers.0", "layers.1", "layers.2", "layers.3"]
    steps = S.duplicate_steps(names, ["layers.3", "layers.1"])
    assert [(s.block, s.source, s.at) for s in steps] == [("layers.1", "self", 2), ("layers.3", "self", 5)]


def test_duplicate_steps_of_nothing_selected_is_empty():
    assert S.duplicate_steps(["a", "b"], []) == []


def test_pasting_two_clipboard_blocks_keeps_their_order_when_the_seams_get_adapters():
    """Positions count adapters: pasting the second block at ``at + 1`` landed it between the
    first pasted block and that block's left adapter, so the two came out reversed."""
    base = load_base("digits_resnet")
    steps = S.paste_steps(base, base, "digits_resnet", [("self", "layers.1"), ("digits_cnn", "features.1")],
                          at=2, adapter="lstsq", container="layers")
    assert {(s.block, s.source, s.adapter, s.into) for s in steps} == {
        ("layers.1", "self", "lstsq", "layers"), ("features.1", "digits_cnn", "lstsq", "layers")}
    model = apply(Plan("digits_resnet", tuple(steps)), ctx=ApplyContext("digits_resnet"))
    x = ApplyContext("digits_resnet").calibration(0)[0]
    blocks = S.list_blocks(model, x, "layers", "digits_resnet")
    kept = [b.name for b in blocks if not b.adapter]
    assert any(b.adapter for b in blocks)  # the seams did get adapters
    assert kept == ["layers.0", "layers.1", "layers.1_copy", "layers.digits_cnn_1", "layers.2", "layers.3"]


def test_paste_steps_take_a_block_cut_from_the_model_from_its_pristine_base():
    base = load_base("digits_resnet")
    cut = apply(Plan("digits_resnet").then(S.Cut(("layers.1",))), ctx=ApplyContext("digits_resnet"))
    (step,) = S.paste_steps(cut, base, "digits_resnet", [("self", "layers.1")], at=1, adapter="auto",
                            container="layers")
    assert (step.block, step.source) == ("layers.1", "digits_resnet")
    assert "layers.1" not in S.block_names(cut, "layers")


def test_paste_steps_refuse_a_block_in_neither_the_model_nor_the_base():
    base = load_base("digits_resnet")
    with pytest.raises(ModelError, match="no longer in the model nor in the base"):
        S.paste_steps(base, base, "digits_resnet", [("self", "layers.9")], at=0, adapter="auto",
                      container="layers")
