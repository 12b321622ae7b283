"""Output nests flattened into named leaves (core/ground/outputs.py)."""
from collections import OrderedDict, namedtuple

import torch

from core.ground.outputs import SINGLE, cat_leaves, is_nest, judgeable, leaves, take


def test_plain_tensor_is_one_leaf():
    t = torch.zeros(2, 3)
    assert leaves(t) == {SINGLE: t} and not is_nest(t)


def test_segmenter_dict_and_nested_tuple_names():
    seg = OrderedDict(out=torch.zeros(2, 5, 4, 4), aux=torch.ones(2, 5, 4, 4))
    assert list(leaves(seg)) == ["out", "aux"] and is_nest(seg)
    nested = (torch.zeros(2, 1), [torch.zeros(2, 2), {"boxes": torch.zeros(2, 4), "labels": torch.zeros(2).long()}])
    named = leaves(nested)
    assert list(named) == ["0", "1.0", "1.1.boxes", "1.1.labels"]
    assert judgeable(named) == ["0", "1.0", "1.1.boxes"]


def test_named_tuple_and_none_leaves():
    Out = namedtuple("Out", "logits hidden")
    named = leaves(Out(torch.zeros(3, 2), None))
    assert list(named) == ["logits"]  # a field name, and the None field is left out


def test_hf_model_output_names():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    o = BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 3, 4), pooler_output=torch.zeros(2, 4))
    assert list(leaves(o)) == ["last_hidden_state", "pooler_output"]


def test_cat_and_take_keep_names_and_rows():
    a = {"out": torch.arange(4.).reshape(2, 2), "aux": torch.zeros(2, 1)}
    b = {"out": torch.arange(4., 8.).reshape(2, 2), "aux": torch.ones(2, 1)}
    joined = cat_leaves([a, b])
    assert joined["out"].shape == (4, 2) and joined["aux"][2:].eq(1).all()
    assert take(joined, slice(1, 3))["out"].tolist() == [[2., 3.], [4., 5.]]
    assert cat_leaves([]) == {}
