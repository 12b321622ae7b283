"""Criterion / granularity selectors and the structured views on the Prune page (AppTest)."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from core.prune import Prune
from tests.helpers.app import metric, new_app, workspace
from tests.helpers.app import ok as _ok


def _unit_table(at):
    (table,) = [d.value for d in at.dataframe if list(d.value.columns) == ["unit", "score", "status"]]
    return table


def _array(v) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed-array encoding {"dtype", "bdata", "shape"}."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.asarray(v)


def test_selectors_come_from_the_registry_and_show_the_description():
    from core.prune.criteria import CRITERIA

    at = new_app("digits_cnn")
    _ok(at)
    assert at.selectbox(key="prune_granularity").options == ["weight (masks)", "channel (removed)"]
    opts = at.selectbox(key="prune_criterion").options
    assert opts == [n for n, c in CRITERIA.items() if "weight" in c.granularities]
    assert any(CRITERIA.get("l1").description in c.value for c in at.caption)


@pytest.mark.slow
def test_channel_granularity_slider_drops_params_and_latency_and_shows_importance():
    at = new_app("digits_resnet")
    params0 = workspace(at).base_metrics().params
    at.selectbox(key="prune_granularity").set_value("channel").run()
    _ok(at)
    at.slider(key="global_sparsity").set_value(0.5).run()
    _ok(at)
    ws = workspace(at)
    step = ws.plan.steps[-1]
    assert isinstance(step, Prune) and step.granularity == "channel" and step.sparsity == 0.5
    m, base = ws.metrics(), ws.base_metrics()
    assert m.params < params0 and m.macs < base.macs and m.shapes_changed
    assert metric(at, "MACs ratio") == f"{base.macs / m.macs:.2f}×"
    assert metric(at, "Latency ratio").endswith("×")  # measured, so its value is not asserted
    # the selected layer's unit table: one row per unit, half of them pruned overall
    at.selectbox(key="layer").set_value("layers.0.conv1").run()
    _ok(at)
    table = _unit_table(at)
    assert len(table) == 32 and set(table["status"]) <= {"kept", "pruned"}


@pytest.mark.slow
def test_head_granularity_on_the_vit_and_compare_criteria():
    at = new_app("digits_vit")
    at.selectbox(key="prune_granularity").set_value("head").run()
    _ok(at)
    at.slider(key="global_sparsity").set_value(0.5).run()
    _ok(at)
    assert sum(b.attn.num_heads for b in workspace(at).model.blocks) == 8
    at.selectbox(key="layer").set_value("blocks.0.attn.qkv").run()
    _ok(at)
    assert len(_unit_table(at)) == 4
    at.multiselect(key="cmp_criteria").set_value(["l1", "taylor", "random"]).run()
    _ok(at)
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart") if json.loads(c.proto.spec)["layout"].get("title")}
    jac = charts["Overlap of pruned units (Jaccard)"]["data"][0]
    z = _array(jac["z"])
    assert list(jac["x"]) == ["l1", "taylor", "random"]
    assert z.diagonal().tolist() == [1.0, 1.0, 1.0]
    # the overlaps are the ones core computes for the same layer and ratio
    from core.prune.structured import compare_criteria
    ws = workspace(at)
    expect, _ = compare_criteria(ws.model_before(len(ws.plan.steps) - 1), "blocks.0.attn",
                                 ["l1", "taylor", "random"], 0.5, "head", ws.ctx)
    assert z.tolist() == expect.values.tolist()


def test_a_layer_without_units_is_explained_not_an_error():
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.selectbox(key="layer").set_value("head.2").run()
    _ok(at)
    assert any("has no prunable channels" in i.value for i in at.info)
